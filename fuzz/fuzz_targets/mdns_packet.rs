//! An mDNS packet off the LAN: decoded; what decodes encodes and decodes again.
#![no_main]
use rmicro_mdns::dns::Message;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        if let Ok(bytes) = message.encode() {
            Message::decode(&bytes).expect("what we encode, we decode");
        }
    }
});
