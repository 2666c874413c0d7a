//! Feeds arbitrary bytes to the decoder two ways: as a whole datagram (header checks, tag), and,
//! since random bytes never pass the tag, as an authentic payload of the kind named by the
//! first byte. Decoding must never panic; whatever decodes must re-encode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::datagram::decode_datagram;
use protocol::header::ClusterAuth;
use protocol::message::Message;
use protocol::stats::DropCounters;

fuzz_target!(|data: &[u8]| {
    let auth = ClusterAuth::new(7, b"fuzz key");
    let counters = DropCounters::new();
    if let Err(e) = decode_datagram(&auth, data) {
        counters.record(&e);
    }
    if let Some((&kind, payload)) = data.split_first() {
        match Message::decode_payload(kind, payload) {
            Ok(message) => {
                let again = message.encode_payload().expect("a decoded message re-encodes");
                assert_eq!(Message::decode_payload(kind, &again).as_ref(), Ok(&message));
            }
            Err(e) => {
                counters.record(&e);
            }
        }
    }
});
