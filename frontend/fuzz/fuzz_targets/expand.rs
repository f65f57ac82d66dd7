#![no_main]
//! Any word through the expansion lexer (`process_word`, `process_words`,
//! `process_word_with_matches`) with every option combination and both escape chars. Errors are
//! fine; panics and hangs are findings. The first byte picks the options; variables whose name
//! starts with `U` are unset, `E…` are empty, the rest expand to a value with spaces, quotes,
//! `$` and glob chars (so word splitting and pattern ops see awkward text).

use libfuzzer_sys::fuzz_target;
use rbuild_frontend::expand::Lexer;

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(body) else {
        return;
    };
    let lexer = Lexer::new(if mode & 1 == 0 { '\\' } else { '`' })
        .with_raw_quotes(mode & 2 != 0)
        .with_raw_escapes(mode & 4 != 0)
        .with_skip_process_quotes(mode & 8 != 0)
        .with_skip_unset_env(mode & 16 != 0);
    let env = |name: &str| -> Option<String> {
        match name.chars().next() {
            Some('U') => None,
            Some('E') => Some(String::new()),
            _ => Some(format!("v {name} 'q\" $x *?[a]")),
        }
    };
    let one = lexer.process_word(word, &env);
    let many = lexer.process_words(word, &env);
    let with = lexer.process_word_with_matches(word, &env);
    if let Err(e) = &one {
        let _ = e.to_string();
    }
    // process_word_with_matches is process_words plus bookkeeping: same words, same failure.
    match (&many, &with) {
        (Ok(w), Ok(x)) => assert_eq!(w, &x.words, "words differ for {word:?}"),
        (Err(a), Err(b)) => assert_eq!(a, b, "errors differ for {word:?}"),
        _ => panic!("process_words and process_word_with_matches disagree on {word:?}"),
    }
});
