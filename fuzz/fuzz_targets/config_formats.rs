//! Configuration text in JSON, YAML or TOML (a file or a config center's value).
#![no_main]
use rmicro_core::config::source::Format;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = [Format::Json, Format::Yaml, Format::Toml][usize::from(pick) % 3];
    let _ = format.parse(text);
    let _ = rmicro_core::config::source::parse_value(text);
});
