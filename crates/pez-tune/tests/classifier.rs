//! The classifier's input layout and truncation on the real SmolLM2 tokenizer and weights.

use candle_core::{DType, Device};
use pez_models::{load_lm, tokenizer};
use pez_tasks::TaskSpec;
use pez_tune::Classifier;

#[test]
fn texts_longer_than_the_context_are_truncated_keeping_prompt_and_template() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    let task = TaskSpec::resolve("sst2").unwrap();
    let clf = Classifier::new(lm.model.as_ref(), &lm.tokenizer, lm.bos, &task, 10).unwrap();
    assert_eq!(lm.bos, None, "SmolLM2's GGUF asks for no BOS");
    let template = tokenizer::encode(&lm.tokenizer, " It was").unwrap();
    assert_eq!(clf.template_ids, template);
    assert_eq!(clf.max_text_tokens, lm.model.info().max_positions - 10 - template.len());
    let long = "great ".repeat(lm.model.info().max_positions + 500);
    let ids = clf.encode(&long).unwrap();
    assert_eq!(ids.len() + 10, lm.model.info().max_positions, "prompt + text + template fill the context exactly");
    assert_eq!(&ids[ids.len() - template.len()..], template.as_slice(), "the template survives truncation");
    let head = tokenizer::encode(&lm.tokenizer, "great great great").unwrap();
    assert_eq!(&ids[..head.len()], head.as_slice(), "the start of the text is kept");
    // Short texts are untouched.
    let short = clf.encode("a fine film").unwrap();
    assert_eq!(short, [tokenizer::encode(&lm.tokenizer, "a fine film").unwrap(), template].concat());
}

#[test]
fn verbalizers_are_single_tokens_for_the_built_in_tasks() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    for name in ["sst2", "agnews"] {
        let task = TaskSpec::resolve(name).unwrap();
        let clf = Classifier::new(lm.model.as_ref(), &lm.tokenizer, lm.bos, &task, 10).unwrap();
        assert!(clf.warnings.is_empty(), "{name}: {:?}", clf.warnings);
        for (v, id) in task.verbalizers.iter().zip(&clf.verbalizer_ids) {
            assert_eq!(&tokenizer::decode(&lm.tokenizer, &[*id]).unwrap(), v);
        }
    }
}

#[test]
fn prompts_use_only_readable_non_special_tokens() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    let allowed = pez_tune::run::allowed_tokens(lm.model.as_ref(), &lm.tokenizer);
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
