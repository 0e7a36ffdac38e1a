//! The tokens a tuned prompt may use, on the real SmolLM2 tokenizer.

use candle_core::{DType, Device};
use pez_hub::tokenizer;
use pez_models::load_lm;

#[test]
fn prompts_use_only_readable_non_special_tokens() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    let allowed = tokenizer::token_set(&lm.tokenizer, lm.model.info().vocab_size, tokenizer::TokenSet::All);
    let n = allowed.iter().filter(|&&a| a).count();
    assert!(n > 45_000 && n < allowed.len(), "{n} of {} allowed", allowed.len());
    for (id, t) in lm.tokenizer.get_added_tokens_decoder() {
        if t.special {
            assert!(!allowed[id as usize], "special token {:?} allowed", t.content);
        }
    }
    for (i, &a) in allowed.iter().enumerate() {
        let text = tokenizer::decode(&lm.tokenizer, &[i as u32]).unwrap();
        assert_eq!(
            a,
            !text.contains('\u{FFFD}')
                && !lm
                    .tokenizer
                    .get_added_tokens_decoder()
                    .get(&(i as u32))
                    .is_some_and(|t| t.special),
            "token {i} {text:?}"
        );
    }
}

/// The subsets on the real tokenizer: control, whitespace-only and byte-fallback pieces out of `printable`; only
/// space-led runs of letters in `words`.
#[test]
fn printable_and_words_subsets_on_smollm2() {
    use tokenizer::TokenSet;
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    let tok = &lm.tokenizer;
    let sets: Vec<Vec<bool>> = [TokenSet::All, TokenSet::Printable, TokenSet::Words]
        .iter()
        .map(|&s| tokenizer::token_set(tok, lm.model.info().vocab_size, s))
        .collect();
    let id = |piece: &str| tok.token_to_id(piece).unwrap_or_else(|| panic!("no piece {piece:?}")) as usize;
    let count = |s: &Vec<bool>| s.iter().filter(|&&a| a).count();
    eprintln!(
        "all {}, printable {}, words {}",
        count(&sets[0]),
        count(&sets[1]),
        count(&sets[2])
    );
    // (piece, in all, in printable, in words): newline, tab, CRLF, spaces only, a word, a word without its space,
    // a word with punctuation, a bracket after a space, a capitalised word.
    for (piece, want) in [
        ("Ċ", [true, false, false]),
        ("ĉ", [true, false, false]),
        ("čĊ", [true, false, false]),
        ("ĠĠ", [true, false, false]),
        ("Ġmovie", [true, true, true]),
        ("movie", [true, true, false]),
        ("Ġmovie.", [false, false, false]),
        ("Ġ(", [true, true, false]),
        ("ĠThe", [true, true, true]),
    ] {
        let Some(i) = tok.token_to_id(piece).map(|i| i as usize) else {
            assert!(piece == "Ġmovie.", "{piece:?} should be a SmolLM2 piece");
            continue;
        };
        let got = [sets[0][i], sets[1][i], sets[2][i]];
        assert_eq!(
            got,
            want,
            "{piece:?} (id {i}, text {:?})",
            tokenizer::decode(tok, &[i as u32]).unwrap()
        );
    }
    assert!(
        !sets[1][id("Ġ")] && !sets[2][id("Ġ")],
        "a lone space is whitespace only"
    );
    // Nested, and each set a real part of the one before.
    for w in sets.windows(2) {
        assert!(w[1].iter().zip(&w[0]).all(|(b, a)| !b || *a));
        assert!(count(&w[1]) < count(&w[0]));
    }
    assert!(count(&sets[2]) > 10_000, "SmolLM2 has tens of thousands of word pieces");
    for (i, _) in sets[1].iter().enumerate().filter(|(_, &a)| a) {
        let text = tokenizer::decode(tok, &[i as u32]).unwrap();
        assert!(
            !text.chars().any(char::is_control) && !text.trim().is_empty(),
            "{i} {text:?}"
        );
    }
}
