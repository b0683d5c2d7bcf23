//! The gateway's `google.api.http` path templates: parsed and matched against
//! request paths (`template\npath`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, "/"));
    let _ = rmicro_api::fuzzing::path_template(template, path);
});
