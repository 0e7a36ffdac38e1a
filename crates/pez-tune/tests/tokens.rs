//! The tokens a tuned prompt may use, on the real SmolLM2 tokenizer.

use candle_core::{DType, Device};
use pez_hub::tokenizer;
use pez_models::load_lm;

#[test]
fn prompts_use_only_readable_non_special_tokens() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    let allowed = pez_tune::allowed_tokens(lm.model.as_ref(), &lm.tokenizer);
    let n = allowed.iter().filter(|&&a| a).count();
    assert!(n > 45_000 && n < allowed.len(), "{n} of {} allowed", allowed.len());
    for (id, t) in lm.tokenizer.get_added_tokens_decoder() {
        if t.special {
            assert!(!allowed[id as usize], "special token {:?} allowed", t.content);
        }
    }
    for (i, &a) in allowed.iter().enumerate() {
        let text = tokenizer::decode(&lm.tokenizer, &[i as u32]).unwrap();
        assert_eq!(a, !text.contains('\u{FFFD}') && !lm.tokenizer.get_added_tokens_decoder().get(&(i as u32)).is_some_and(|t| t.special), "token {i} {text:?}");
    }
}
