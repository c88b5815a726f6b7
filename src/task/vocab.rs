//! The task's tokenizer: a fixed word-level vocabulary, saved as a `tokenizers` tokenizer.json plus
//! a tokenizer_config.json, so [`crate::tokenizer::Tokenizer::from_dir`] reads it like a checkpoint.

use std::path::Path;

use serde_json::json;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::write_atomic;
use crate::{Error, Result};

/// The vocabulary, id = index. Ids 0..=22 are the word-level model's; the last three are special
/// (added) tokens, matched in raw text before pre-tokenization and dropped by `skip_special`.
pub const TASK_VOCAB: [&str; 26] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", // 0..=9
    "+", "-", "*", "=", ";", " ", "\n", // 10..=16
    "\\boxed{", "}", "check", // 17..=19
    "system", "user", "assistant", // 20..=22
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", // 23..=25, special
];

const FIRST_SPECIAL: usize = 23;

/// ChatML, one user turn per question, no default system prompt (the real-model prompt of SPEC §8.1).
pub const TASK_CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Pre-tokenizer pattern: the multi-character words first (leftmost alternative wins), then any
/// single character. Each match is its own piece; a character outside the vocabulary then fails to
/// encode (the model has no unknown token, so nothing is silently replaced). "Any character" is
/// `[\s\S]`, not `(?s:.)`: transformers' tokenizers (Python) compiles the pattern with Oniguruma, which
/// rejects the `(?s:…)` group ("undefined group option"), so AutoTokenizer could not load the folder.
const PIECES_REGEX: &str = r"\\boxed\{|check|system|user|assistant|[\s\S]";

/// Builds the task tokenizer in memory: WordLevel over [`TASK_VOCAB`], a `Split` pre-tokenizer
/// isolating every vocabulary piece, a `Fuse` decoder (tokens concatenated, no spaces added).
pub fn build_task_tokenizer() -> Result<tokenizers::Tokenizer> {
    let fail = |what: String| Error::input(format!("building the task tokenizer: {what}"));
    let model = WordLevel::builder()
        .vocab(TASK_VOCAB[..FIRST_SPECIAL].iter().enumerate().map(|(id, t)| (t.to_string(), id as u32)).collect())
        .unk_token("<unk>".to_string())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let split = Split::new(SplitPattern::Regex(PIECES_REGEX.to_string()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| fail(e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(split));
    tok.with_decoder(Some(Fuse::new()));
    let specials: Vec<AddedToken> =
        TASK_VOCAB[FIRST_SPECIAL..].iter().map(|t| AddedToken::from(*t, true).normalized(false)).collect();
    tok.add_special_tokens(&specials);
    // our invariant: ids follow TASK_VOCAB
    for (id, t) in TASK_VOCAB.iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(id as u32), "task vocabulary id of {t:?}");
    }
    Ok(tok)
}

/// Writes `dir/tokenizer.json` (the `tokenizers` serialization of [`build_task_tokenizer`]) and
/// `dir/tokenizer_config.json` (eos `<|im_end|>`, pad `<|endoftext|>`, no bos, [`TASK_CHAT_TEMPLATE`]),
/// each atomically. Creates `dir` if needed.
pub fn write_task_tokenizer(dir: &Path) -> Result<()> {
    let tok = build_task_tokenizer()?;
    let tokenizer_json = dir.join("tokenizer.json");
    let text = tok.to_string(true).map_err(|e| Error::Tokenizer {
        path: tokenizer_json.clone(),
        what: format!("cannot serialise the task tokenizer: {e}"),
    })?;
    write_atomic(&tokenizer_json, text.as_bytes())?;

    let added_tokens_decoder: serde_json::Map<String, serde_json::Value> = TASK_VOCAB
        .iter()
        .enumerate()
        .skip(FIRST_SPECIAL)
        .map(|(id, t)| {
            let entry = json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false,
                               "single_word": false, "special": true});
            (id.to_string(), entry)
        })
        .collect();
    let config = json!({
        "add_bos_token": false,
        "added_tokens_decoder": added_tokens_decoder,
        "bos_token": null,
        "chat_template": TASK_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "model_max_length": 128,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": null,
    });
    let config_path = dir.join("tokenizer_config.json");
    let bytes = serde_json::to_vec_pretty(&config).map_err(|e| Error::json(&config_path, e))?;
    write_atomic(&config_path, &bytes)
}
