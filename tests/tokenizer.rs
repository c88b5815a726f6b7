//! The tokenizer wrapper against the HF oracle's fixtures (ids, decoding, chat rendering, greedy
//! prompt) and hand-written templates of each family.

use std::path::{Path, PathBuf};

use drpo::tokenizer::{ChatFamily, Message, Tokenizer};
use drpo::Error;
use serde_json::{json, Value};

const FIXTURES: [&str; 3] = ["qwen2-tiny", "qwen2-tiny-mqa", "qwen2-odd"];

fn data_dir() -> PathBuf {
    match std::env::var_os("DRPO_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn messages_of(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// A fresh empty folder under the system temp dir, unique per test and process.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drpo-test-tokenizer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_config(dir: &Path, config: &Value) {
    std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_vec_pretty(config).unwrap()).unwrap();
}

/// The fixture's tokenizer.json in `dir`, with a tokenizer_config.json holding `template`.
fn dir_with_template(name: &str, template: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::copy(data_dir().join("qwen2-tiny/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    write_config(&dir, &json!({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": template}));
    dir
}

#[test]
fn fixture_tokenizer_cases_ids_and_decoding() {
    for fixture in FIXTURES {
        let dir = data_dir().join(fixture);
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let reference = read_json(&dir.join("reference.json"));
        let cases = reference["tokenizer_cases"].as_array().unwrap();
        assert_eq!(cases.len(), 6, "{fixture}");
        for case in cases {
            let name = format!("{fixture}/{}", case["name"].as_str().unwrap());
            let text = case["text"].as_str().unwrap();
            let want_ids = ids_of(&case["ids"]);
            let ids = tok.encode(text).unwrap();
            assert_eq!(ids, want_ids, "{name}: ids");
            let tokens: Vec<String> = ids.iter().map(|&id| tok.id_to_token(id).unwrap()).collect();
            let want_tokens: Vec<&str> = case["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            assert_eq!(tokens, want_tokens, "{name}: tokens");
            let decoded = tok.decode(&want_ids, false).unwrap();
            assert_eq!(decoded, case["decoded"].as_str().unwrap(), "{name}: decode");
            if case["roundtrip_exact"].as_bool().unwrap() {
                assert_eq!(decoded, text, "{name}: round trip");
            }
            let skipped = tok.decode(&want_ids, true).unwrap();
            assert_eq!(skipped, case["decoded_skip_special"].as_str().unwrap(), "{name}: decode skip_special");
        }
    }
}

#[test]
fn fixture_special_ids_and_vocab() {
    for fixture in FIXTURES {
        let dir = data_dir().join(fixture);
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let reference = read_json(&dir.join("reference.json"));
        // qwen2-odd's model has more rows (400) than its tokenizer has tokens (384), as Qwen2.5's
        let model_vocab = reference["config"]["vocab_size"].as_u64().unwrap() as usize;
        let tokenizer_vocab = reference.get("tokenizer_vocab_size").map_or(model_vocab, |v| v.as_u64().unwrap() as usize);
        assert_eq!(tok.vocab_size(), tokenizer_vocab, "{fixture}");
        assert!(tok.vocab_size() <= model_vocab, "{fixture}");
        for (token, id) in reference["special_tokens"].as_object().unwrap() {
            assert_eq!(tok.token_to_id(token), Some(id.as_u64().unwrap() as u32), "{fixture}: {token}");
        }
        // generation_config [<|im_end|>, <|endoftext|>] first, then tokenizer_config / config add nothing new
        let gen = read_json(&dir.join("generation_config.json"));
        assert_eq!(tok.eos_ids(), ids_of(&gen["eos_token_id"]).as_slice(), "{fixture}");
        assert_eq!(tok.eos_ids(), &[383, 381], "{fixture}");
        assert_eq!(tok.pad_id(), Some(reference["pad_token_id"].as_u64().unwrap() as u32), "{fixture}");
        assert_eq!(tok.bos_id(), Some(381), "{fixture}: tokenizer_config bos is null, generation_config has 381");
        assert_eq!(tok.token_to_id(reference["eos_token"].as_str().unwrap()), Some(383));
        assert_eq!(tok.chat_family(), ChatFamily::ChatMl);
        assert_eq!(tok.default_system_prompt(), Some("You are a helpful assistant."));
        assert_eq!(tok.generation_prompt(), "<|im_start|>assistant\n");
        assert!(!tok.opens_think_block());
    }
}

#[test]
fn fixture_chat_template_example() {
    for fixture in FIXTURES {
        let dir = data_dir().join(fixture);
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let example = &read_json(&dir.join("reference.json"))["chat_template_example"];
        let messages = messages_of(&example["messages"]);
        let rendered = tok.apply_chat_template(&messages, example["add_generation_prompt"].as_bool().unwrap()).unwrap();
        assert_eq!(rendered, example["rendered"].as_str().unwrap(), "{fixture}");
        assert_eq!(tok.encode(&rendered).unwrap(), ids_of(&example["ids"]), "{fixture}");
        // without the generation prompt the rendering is the same minus its last line
        let no_prompt = tok.apply_chat_template(&messages, false).unwrap();
        assert_eq!(format!("{no_prompt}<|im_start|>assistant\n"), rendered);
    }
}

#[test]
fn fixture_greedy_prompt_from_question() {
    for fixture in FIXTURES {
        let dir = data_dir().join(fixture);
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let greedy = read_json(&dir.join("greedy.json"));
        assert_eq!(greedy["prompt_kind"], "chat");
        let question = greedy["question"].as_str().unwrap();
        let prompt = tok.apply_chat_template(&[Message::user(question)], true).unwrap();
        assert_eq!(prompt, greedy["prompt_text"].as_str().unwrap(), "{fixture}");
        let ids = tok.encode(&prompt).unwrap();
        assert_eq!(ids, ids_of(&greedy["prompt_ids"]), "{fixture}");
        assert_eq!(ids.len() as u64, greedy["prompt_length"].as_u64().unwrap());
    }
}

#[test]
fn fixture_system_message_replaces_the_default() {
    let tok = Tokenizer::from_dir(&data_dir().join("qwen2-tiny")).unwrap();
    let got = tok.apply_chat_template(&[Message::system("Be brief."), Message::user("Hi")], true).unwrap();
    // the fixture's Jinja: the default is written only when messages[0] is not a system message
    assert_eq!(got, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn decode_rejects_out_of_range_ids() {
    let tok = Tokenizer::from_dir(&data_dir().join("qwen2-tiny")).unwrap();
    assert!(matches!(tok.decode(&[1, 384], false), Err(Error::Input { .. })));
    assert_eq!(tok.decode(&[], false).unwrap(), "");
    // a model's output: ids the tokenizer lacks (a padded vocabulary's rows) are left out, as transformers does
    assert_eq!(tok.decode_lenient(&[331, 384, 265, 399, 383], false).unwrap(), (tok.decode(&[331, 265, 383], false).unwrap(), 2));
    assert_eq!(tok.decode_lenient(&[331, 390, 265, 383], true).unwrap(), ("What is".to_string(), 1));
}

#[test]
fn from_file_has_no_template_and_no_ids() {
    let tok = Tokenizer::from_file(&data_dir().join("qwen2-tiny/tokenizer.json")).unwrap();
    assert_eq!(tok.chat_family(), ChatFamily::NoTemplate);
    assert!(tok.eos_ids().is_empty());
    assert_eq!(tok.pad_id(), None);
    let got = tok.apply_chat_template(&[Message::user("Hi")], true).unwrap();
    assert_eq!(got, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

fn assert_tokenizer_error_names(err: Error, file: &Path) {
    match err {
        Error::Tokenizer { path, .. } => assert_eq!(path, file),
        other => panic!("expected Error::Tokenizer naming {}, got {other:?}", file.display()),
    }
}

#[test]
fn missing_or_corrupt_tokenizer_json_is_a_tokenizer_error() {
    let dir = temp_dir("missing");
    assert_tokenizer_error_names(Tokenizer::from_dir(&dir).unwrap_err(), &dir.join("tokenizer.json"));
    assert_tokenizer_error_names(Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap_err(), &dir.join("tokenizer.json"));

    let path = dir.join("tokenizer.json");
    std::fs::write(&path, b"{ this is not json").unwrap();
    assert_tokenizer_error_names(Tokenizer::from_dir(&dir).unwrap_err(), &path);

    let full = std::fs::read(data_dir().join("qwen2-tiny/tokenizer.json")).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert_tokenizer_error_names(err, &path);

    // valid JSON, not a tokenizer
    std::fs::write(&path, b"{\"model\": 3}").unwrap();
    assert_tokenizer_error_names(Tokenizer::from_file(&path).unwrap_err(), &path);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_side_files_are_named() {
    let dir = dir_with_template("side", "");
    std::fs::write(dir.join("generation_config.json"), b"{ broken").unwrap();
    match Tokenizer::from_dir(&dir).unwrap_err() {
        Error::Json { path, .. } => assert_eq!(path, dir.join("generation_config.json")),
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.join("generation_config.json"), br#"{"eos_token_id": "x"}"#).unwrap();
    assert!(matches!(Tokenizer::from_dir(&dir).unwrap_err(), Error::Config { field, .. } if field == "eos_token_id"));
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    write_config(&dir, &json!({"eos_token": "<|not_a_token|>"}));
    assert!(matches!(Tokenizer::from_dir(&dir).unwrap_err(), Error::Config { field, .. } if field == "eos_token"));
    // eos as an AddedToken object, a single-int generation eos, a list in config.json: union in order
    write_config(&dir, &json!({"eos_token": {"content": "<|im_end|>", "special": true}}));
    std::fs::write(dir.join("generation_config.json"), br#"{"eos_token_id": 381}"#).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"eos_token_id": [383, 382], "pad_token_id": 7}"#).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.eos_ids(), &[381, 383, 382]);
    assert_eq!(tok.pad_id(), Some(7));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A DeepSeek-R1-Distill-style template, written for this test: BOS, system prompts, user and
/// assistant turns (answers only), generation prompt `gen_prompt` (a Jinja literal body).
fn deepseek_template(gen_prompt: &str) -> String {
    format!(
        "{{% if not add_generation_prompt is defined %}}{{% set add_generation_prompt = false %}}{{% endif %}}\
         {{% set ns = namespace(sys='') %}}{{%- for m in messages %}}{{%- if m['role'] == 'system' %}}\
         {{% if ns.sys %}}{{% set ns.sys = ns.sys + '\\n\\n' + m['content'] %}}{{% else %}}{{% set ns.sys = m['content'] %}}{{% endif %}}\
         {{%- endif %}}{{%- endfor %}}{{{{ bos_token }}}}{{{{ ns.sys }}}}\
         {{%- for m in messages %}}{{%- if m['role'] == 'user' %}}{{{{ '<｜User｜>' + m['content'] }}}}\
         {{%- elif m['role'] == 'assistant' %}}{{% set c = m['content'].split('</think>')[-1] %}}\
         {{{{ '<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>' }}}}{{%- endif %}}{{%- endfor %}}\
         {{% if add_generation_prompt %}}{{{{ '{gen_prompt}' }}}}{{% endif %}}"
    )
}

#[test]
fn deepseek_template_renders_and_encodes() {
    let dir = temp_dir("deepseek");
    // the fixture tokenizer plus DeepSeek's special tokens (ids 384..)
    let specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"];
    let mut raw = tokenizers::Tokenizer::from_file(data_dir().join("qwen2-tiny/tokenizer.json")).unwrap();
    let added: Vec<tokenizers::AddedToken> = specials.iter().map(|s| tokenizers::AddedToken::from(*s, true)).collect();
    raw.add_special_tokens(&added);
    raw.save(dir.join("tokenizer.json"), false).unwrap();
    let id = |s: &str| 384 + specials.iter().position(|t| *t == s).unwrap() as u32;

    let messages = [
        Message::system("Be exact."),
        Message::user("What is 2+3?"),
        Message::assistant("<think>2+3 is 5</think>It is 5."),
        Message::user("And 5+1?"),
    ];
    for (gen_prompt, want_prompt, opens) in [
        (r"<｜Assistant｜><think>\n", "<｜Assistant｜><think>\n", true),
        ("<｜Assistant｜>", "<｜Assistant｜>", false),
    ] {
        write_config(
            &dir,
            &json!({"bos_token": {"content": "<｜begin▁of▁sentence｜>"}, "eos_token": "<｜end▁of▁sentence｜>",
                    "pad_token": "<｜end▁of▁sentence｜>", "chat_template": deepseek_template(gen_prompt)}),
        );
        let tok = Tokenizer::from_dir(&dir).unwrap();
        assert_eq!(tok.chat_family(), ChatFamily::DeepSeekR1);
        assert_eq!(tok.opens_think_block(), opens);
        assert_eq!(tok.generation_prompt(), want_prompt);
        assert_eq!(tok.eos_ids(), &[id("<｜end▁of▁sentence｜>")]);
        assert_eq!(tok.bos_id(), Some(id("<｜begin▁of▁sentence｜>")));
        let rendered = tok.apply_chat_template(&messages, true).unwrap();
        let want = format!(
            "<｜begin▁of▁sentence｜>Be exact.<｜User｜>What is 2+3?<｜Assistant｜>It is 5.<｜end▁of▁sentence｜><｜User｜>And 5+1?{want_prompt}"
        );
        assert_eq!(rendered, want);

        // special tokens split the text, so the ids are the plain pieces' ids around the special ids
        let plain = |s: &str| raw.encode(s, false).unwrap().get_ids().to_vec();
        let mut want_ids = vec![id("<｜begin▁of▁sentence｜>")];
        want_ids.extend(plain("Be exact."));
        want_ids.push(id("<｜User｜>"));
        want_ids.extend(plain("What is 2+3?"));
        want_ids.push(id("<｜Assistant｜>"));
        want_ids.extend(plain("It is 5."));
        want_ids.extend([id("<｜end▁of▁sentence｜>"), id("<｜User｜>")]);
        want_ids.extend(plain("And 5+1?"));
        want_ids.push(id("<｜Assistant｜>"));
        if opens {
            want_ids.extend([id("<think>"), 198]); // 198 = "\n" (byte-level Ċ)
        }
        assert_eq!(tok.encode(&rendered).unwrap(), want_ids);
    }

    // SPEC §8.1: a single user turn, no system prompt
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let prompt = tok.apply_chat_template(&[Message::user("Q")], true).unwrap();
    assert_eq!(prompt, "<｜begin▁of▁sentence｜><｜User｜>Q<｜Assistant｜>");
    assert!(tok.apply_chat_template(&[Message::new("tool", "x")], false).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chatml_template_with_its_own_default_system_prompt() {
    // Qwen2.5-like shape: the system turn comes from a variable in one branch, a fixed sentence in the other
    let template = r"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou check every step. Say \'done\' at the end.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}";
    let dir = dir_with_template("qwen25", template);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.chat_family(), ChatFamily::ChatMl);
    assert_eq!(tok.default_system_prompt(), Some("You check every step. Say 'done' at the end."));
    assert_eq!(
        tok.apply_chat_template(&[Message::user("2+2?")], true).unwrap(),
        "<|im_start|>system\nYou check every step. Say 'done' at the end.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        tok.apply_chat_template(&[Message::system("S"), Message::user("2+2?")], false).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chatml_variants_raw_text_and_think() {
    // raw template text with real newlines and no default system prompt
    let raw = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let dir = dir_with_template("raw", raw);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.chat_family(), ChatFamily::ChatMl);
    assert_eq!(tok.default_system_prompt(), None);
    assert_eq!(tok.generation_prompt(), "<|im_start|>assistant\n");
    assert_eq!(tok.apply_chat_template(&[Message::user("x")], true).unwrap(), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    std::fs::remove_dir_all(&dir).unwrap();

    // a generation prompt that opens a reasoning block
    let think = r"{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}";
    let dir = dir_with_template("think", think);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert!(tok.opens_think_block());
    assert_eq!(tok.apply_chat_template(&[Message::user("x")], true).unwrap(), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think>\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unrecognised_template_falls_back_to_plain_chatml() {
    let llama_like = r"{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}";
    let dir = dir_with_template("other", llama_like);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.chat_family(), ChatFamily::Unrecognised);
    assert_eq!(tok.default_system_prompt(), None);
    assert!(!tok.opens_think_block());
    assert_eq!(tok.apply_chat_template(&[Message::user("x")], true).unwrap(), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn template_from_chat_template_jinja_file() {
    let dir = temp_dir("jinja");
    std::fs::copy(data_dir().join("qwen2-tiny/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let fixture_cfg = read_json(&data_dir().join("qwen2-tiny/tokenizer_config.json"));
    std::fs::write(dir.join("chat_template.jinja"), fixture_cfg["chat_template"].as_str().unwrap()).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.chat_family(), ChatFamily::ChatMl);
    assert_eq!(tok.default_system_prompt(), Some("You are a helpful assistant."));
    std::fs::remove_dir_all(&dir).unwrap();
}
