#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    netprobe_fuzz::decode_record(data);
});
