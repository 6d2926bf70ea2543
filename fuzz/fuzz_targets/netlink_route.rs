#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    netprobe_fuzz::netlink_route(data);
});
