//! The SQL front door: any text through the one parser every statement passes (tokens,
//! nesting limits, DataFusion's parser, prognos's statements). It must return a statement list
//! or an error, never panic or run away.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = prognos_engine::parser::parse(sql);
    }
});
