//! cargo-fuzz target `socketio_engine_packets`: `checks::socketio_engine_packet` (../../tests/it/fuzz_support/checks.rs),
//! the check of the property test of the same name in tests/it/fuzz_decoders.rs.
#![no_main]

#[path = "../../tests/it/fuzz_support/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::socketio_engine_packet(data));
