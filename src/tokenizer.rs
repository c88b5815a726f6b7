//! Tokenizer of a Hugging Face checkpoint: `tokenizer.json` through the `tokenizers` crate, plus the
//! ids and the chat template of `tokenizer_config.json`, `generation_config.json` and `config.json`.
//!
//! Chat templates are Jinja programs; this crate has no Jinja engine. Instead the template string is
//! read for the few facts that decide the rendering of a plain chat (roles `system` / `user` /
//! `assistant`, text content), and one of two hand-written renderers is used:
//!
//! | family | recognised by | rendering |
//! | --- | --- | --- |
//! | [`ChatFamily::ChatMl`] (Qwen) | `<\|im_start\|>` in the template | `<\|im_start\|>{role}\n{content}<\|im_end\|>\n` per message; when the first message is not a system one, the default system prompt written in the template (if any) comes first; generation prompt `<\|im_start\|>assistant\n` (or the template's own, e.g. with `<think>\n`) |
//! | [`ChatFamily::DeepSeekR1`] | `<｜User｜>` and `<｜Assistant｜>` | `{bos}{system prompts joined by "\n\n"}`, then `<｜User｜>{content}` and `<｜Assistant｜>{content after the last </think>}<｜end▁of▁sentence｜>`; generation prompt `<｜Assistant｜>` or `<｜Assistant｜><think>\n`, as the template writes it |
//! | [`ChatFamily::NoTemplate`], [`ChatFamily::Unrecognised`] | no template / anything else | ChatML without a default system prompt |
//!
//! "Written in the template" means: a string literal (or raw template text) that contains
//! `<|im_start|>system\n` followed by fixed text and `<|im_end|>`. Literals that stop before
//! `<|im_end|>` (a system turn filled from a variable) are not defaults.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::read_json;
use crate::{Error, Result};

const CHATML_START: &str = "<|im_start|>";
const CHATML_END: &str = "<|im_end|>";
const DEEPSEEK_USER: &str = "<｜User｜>";
const DEEPSEEK_ASSISTANT: &str = "<｜Assistant｜>";
const DEEPSEEK_EOS: &str = "<｜end▁of▁sentence｜>";
const DEEPSEEK_BOS: &str = "<｜begin▁of▁sentence｜>";

/// Which renderer [`Tokenizer::apply_chat_template`] uses (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFamily {
    /// Qwen-style `<|im_start|>role\ncontent<|im_end|>\n`.
    ChatMl,
    /// DeepSeek-R1-Distill `<｜User｜>` / `<｜Assistant｜>` turns.
    DeepSeekR1,
    /// The checkpoint has no chat template: rendered as ChatML without a default system prompt.
    NoTemplate,
    /// The template is neither ChatML nor DeepSeek: rendered as ChatML without a default system
    /// prompt. Callers should warn; the rendering is probably not what the model was trained on.
    Unrecognised,
}

/// One chat turn. `role` is `system`, `user` or `assistant` (ChatML accepts any role word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Message::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new("assistant", content)
    }
}

/// What the renderer needs, read once from the template string.
#[derive(Debug, Clone)]
struct ChatFormat {
    family: ChatFamily,
    /// ChatML only: injected when the first message is not a system one.
    default_system: Option<String>,
    /// Appended when `add_generation_prompt` is set, e.g. `<|im_start|>assistant\n`.
    generation_prompt: String,
}

/// A checkpoint's tokenizer with its special ids and chat format.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// tokenizer.json, named in every error.
    path: PathBuf,
    eos_ids: Vec<u32>,
    pad_id: Option<u32>,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    chat_template: Option<String>,
    chat: ChatFormat,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("bos_id", &self.bos_id)
            .field("chat", &self.chat)
            .finish()
    }
}

impl Tokenizer {
    /// [`Tokenizer::from_dir`] when `dir/tokenizer.json` exists, `None` when it does not. A file that
    /// exists but does not load (corrupt, or its companion files are) is an error: missing and
    /// corrupt are never confused.
    pub fn from_dir_if_present(dir: &Path) -> Result<Option<Tokenizer>> {
        let path = dir.join("tokenizer.json");
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
            Ok(_) => Tokenizer::from_dir(dir).map(Some),
        }
    }

    /// Loads `dir/tokenizer.json` (required) and, when present, `tokenizer_config.json`,
    /// `generation_config.json`, `config.json` and `chat_template.jinja` from a checkpoint folder.
    ///
    /// eos ids = union, in this order, of generation_config `eos_token_id` (int or list),
    /// tokenizer_config `eos_token`, config `eos_token_id`. pad id: tokenizer_config `pad_token`,
    /// else generation_config, else config `pad_token_id`. bos likewise (`bos_token` /
    /// `bos_token_id`). The chat template: tokenizer_config `chat_template` (a string, or a list of
    /// `{name, template}` where `default` is taken), else `chat_template.jinja`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let mut tok = Tokenizer::from_file(&dir.join("tokenizer.json"))?;

        let tok_cfg_path = dir.join("tokenizer_config.json");
        let gen_cfg_path = dir.join("generation_config.json");
        let cfg_path = dir.join("config.json");
        let tok_cfg = read_json_if_present(&tok_cfg_path)?;
        let gen_cfg = read_json_if_present(&gen_cfg_path)?;
        let cfg = read_json_if_present(&cfg_path)?;

        let mut eos_ids = Vec::new();
        let mut push_unique = |ids: Vec<u32>| {
            for id in ids {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        };
        if let Some(g) = &gen_cfg {
            push_unique(id_list_field(&gen_cfg_path, g, "eos_token_id")?);
        }
        if let Some(t) = &tok_cfg {
            if let Some(s) = token_string_field(&tok_cfg_path, t, "eos_token")? {
                push_unique(vec![tok.id_of_named_token(&tok_cfg_path, "eos_token", &s)?]);
            }
        }
        if let Some(c) = &cfg {
            push_unique(id_list_field(&cfg_path, c, "eos_token_id")?);
        }
        tok.eos_ids = eos_ids;

        // pad: the tokenizer's own token first, then the generation / model configs
        let mut pad_id = None;
        if let Some(t) = &tok_cfg {
            if let Some(s) = token_string_field(&tok_cfg_path, t, "pad_token")? {
                pad_id = Some(tok.id_of_named_token(&tok_cfg_path, "pad_token", &s)?);
            }
        }
        for (path, json) in [(&gen_cfg_path, &gen_cfg), (&cfg_path, &cfg)] {
            if pad_id.is_none() {
                if let Some(j) = json {
                    pad_id = single_id_field(path, j, "pad_token_id")?;
                }
            }
        }
        tok.pad_id = pad_id;

        // bos: only a text for the DeepSeek template (`{{ bos_token }}`), so a token that the
        // vocabulary lacks is kept as text rather than rejected
        let mut bos_id = None;
        if let Some(t) = &tok_cfg {
            if let Some(s) = token_string_field(&tok_cfg_path, t, "bos_token")? {
                bos_id = tok.inner.token_to_id(&s);
                tok.bos_token = Some(s);
            }
        }
        for (path, json) in [(&gen_cfg_path, &gen_cfg), (&cfg_path, &cfg)] {
            if bos_id.is_none() {
                if let Some(j) = json {
                    bos_id = single_id_field(path, j, "bos_token_id")?;
                }
            }
        }
        tok.bos_id = bos_id;
        if tok.bos_token.is_none() {
            tok.bos_token = bos_id.and_then(|id| tok.inner.id_to_token(id));
        }

        let mut template = None;
        if let Some(t) = &tok_cfg {
            template = chat_template_field(&tok_cfg_path, t)?;
        }
        if template.is_none() {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                let text = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
                template = Some(text);
            }
        }
        tok.chat = ChatFormat::from_template(template.as_deref());
        tok.chat_template = template;
        Ok(tok)
    }

    /// Loads a bare `tokenizer.json`: no eos / pad / bos ids, no chat template
    /// ([`ChatFamily::NoTemplate`]).
    pub fn from_file(tokenizer_json: &Path) -> Result<Tokenizer> {
        let path = tokenizer_json.to_path_buf();
        if !path.is_file() {
            return Err(Error::Tokenizer { path, what: "file not found".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer { path: path.clone(), what: format!("cannot load: {e}") })?;
        Ok(Tokenizer {
            inner,
            path,
            eos_ids: Vec::new(),
            pad_id: None,
            bos_id: None,
            bos_token: None,
            chat_template: None,
            chat: ChatFormat::from_template(None),
        })
    }

    /// Text -> ids. Special tokens written in the text (`<|im_end|>`) become their ids. Nothing is
    /// added around the text, not even by the tokenizer's post-processor: chat templates write the
    /// BOS themselves, and running the post-processor too would double it (DeepSeek-R1-Distill's
    /// tokenizer.json has a BOS-adding post-processor). Use
    /// [`encode_with_special_tokens`](Self::encode_with_special_tokens) for that.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_impl(text, false)
    }

    /// Text -> ids with the post-processor's special tokens (HF `tokenizer(text)`).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_impl(text, true)
    }

    fn encode_impl(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), what: format!("encoding failed: {e}") })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids -> text. `skip_special` drops special (added) tokens such as `<|im_end|>`. An id outside
    /// the vocabulary is an error (the `tokenizers` crate would silently drop it).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let v = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v || self.inner.id_to_token(id).is_none()) {
            return Err(Error::input(format!("token id {bad} is not in the vocabulary of {v} tokens")));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), what: format!("decoding failed: {e}") })
    }

    /// Ids -> text for model output: ids the tokenizer does not know (a model's vocab_size is often
    /// larger than its tokenizer: Qwen2.5 has 151,936 rows for 151,665 tokens, and a sampler can draw
    /// the padding rows) are skipped. Returns the text and how many ids were skipped. User input
    /// goes through the strict [`decode`](Self::decode).
    pub fn decode_lenient(&self, ids: &[u32], skip_special: bool) -> Result<(String, usize)> {
        let v = self.vocab_size();
        let known: Vec<u32> = ids.iter().copied().filter(|&id| (id as usize) < v && self.inner.id_to_token(id).is_some()).collect();
        let skipped = ids.len() - known.len();
        let text = self
            .inner
            .decode(&known, skip_special)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), what: format!("decoding failed: {e}") })?;
        Ok((text, skipped))
    }

    /// Number of ids, added tokens included (max id + 1 for a dense vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids that end a response (see [`from_dir`](Self::from_dir)); empty for [`from_file`](Self::from_file).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The raw Jinja template, if the checkpoint has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The renderer chosen from the template (see the module doc).
    pub fn chat_family(&self) -> ChatFamily {
        self.chat.family
    }

    /// ChatML: the system prompt the template injects when the chat has none.
    pub fn default_system_prompt(&self) -> Option<&str> {
        self.chat.default_system.as_deref()
    }

    /// The text appended by `add_generation_prompt`.
    pub fn generation_prompt(&self) -> &str {
        &self.chat.generation_prompt
    }

    /// True when the generation prompt opens a reasoning block (ends with `<think>`, maybe followed
    /// by whitespace): the response then starts inside the block and closes it with `</think>`.
    pub fn opens_think_block(&self) -> bool {
        self.chat.generation_prompt.trim_end().ends_with("<think>")
    }

    /// Renders a chat as the checkpoint's template would (see the module doc for the families).
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut out = String::new();
        match self.chat.family {
            ChatFamily::ChatMl | ChatFamily::NoTemplate | ChatFamily::Unrecognised => {
                if let Some(system) = &self.chat.default_system {
                    if messages.first().is_none_or(|m| m.role != "system") {
                        out.push_str(&format!("{CHATML_START}system\n{system}{CHATML_END}\n"));
                    }
                }
                for m in messages {
                    out.push_str(&format!("{CHATML_START}{}\n{}{CHATML_END}\n", m.role, m.content));
                }
            }
            ChatFamily::DeepSeekR1 => {
                out.push_str(self.bos_token.as_deref().unwrap_or(DEEPSEEK_BOS));
                let systems: Vec<&str> =
                    messages.iter().filter(|m| m.role == "system").map(|m| m.content.as_str()).collect();
                out.push_str(&systems.join("\n\n"));
                for m in messages {
                    match m.role.as_str() {
                        "system" => {}
                        "user" => {
                            out.push_str(DEEPSEEK_USER);
                            out.push_str(&m.content);
                        }
                        "assistant" => {
                            // the template keeps only the answer of earlier assistant turns
                            let answer = m.content.rsplit("</think>").next().unwrap_or(&m.content);
                            out.push_str(DEEPSEEK_ASSISTANT);
                            out.push_str(answer);
                            out.push_str(DEEPSEEK_EOS);
                        }
                        other => {
                            return Err(Error::input(format!(
                                "chat role `{other}` is not supported by the DeepSeek-R1 template (system, user, assistant)"
                            )))
                        }
                    }
                }
            }
        }
        if add_generation_prompt {
            out.push_str(&self.chat.generation_prompt);
        }
        Ok(out)
    }

    fn id_of_named_token(&self, file: &Path, field: &str, token: &str) -> Result<u32> {
        self.inner.token_to_id(token).ok_or_else(|| {
            Error::config(file, field, format!("token `{token}` is not in {}", self.path.display()))
        })
    }
}

impl ChatFormat {
    fn from_template(template: Option<&str>) -> ChatFormat {
        let chatml_prompt = format!("{CHATML_START}assistant\n");
        let Some(template) = template else {
            return ChatFormat { family: ChatFamily::NoTemplate, default_system: None, generation_prompt: chatml_prompt };
        };
        let pieces = template_pieces(template);
        let has = |needle: &str| pieces.iter().any(|p| p.text.contains(needle));
        // the generation prompt is the first fixed text naming the assistant after the last test
        // of `add_generation_prompt` (DeepSeek's template also tests it at the top, to define it)
        let gen_prompt_after = |marker: &str| -> Option<String> {
            let from = template.rfind("add_generation_prompt")?;
            pieces
                .iter()
                .filter(|p| p.offset > from)
                .find_map(|p| p.text.find(marker).map(|at| p.text[at..].to_string()))
        };
        if has(DEEPSEEK_USER) && has(DEEPSEEK_ASSISTANT) {
            let generation_prompt =
                gen_prompt_after(DEEPSEEK_ASSISTANT).unwrap_or_else(|| DEEPSEEK_ASSISTANT.to_string());
            return ChatFormat { family: ChatFamily::DeepSeekR1, default_system: None, generation_prompt };
        }
        if has(CHATML_START) {
            let system_head = format!("{CHATML_START}system\n");
            let default_system = pieces.iter().find_map(|p| {
                let after = &p.text[p.text.find(&system_head)? + system_head.len()..];
                let prompt = &after[..after.find(CHATML_END)?];
                (!prompt.is_empty()).then(|| prompt.to_string())
            });
            let generation_prompt = gen_prompt_after(&chatml_prompt).unwrap_or(chatml_prompt);
            return ChatFormat { family: ChatFamily::ChatMl, default_system, generation_prompt };
        }
        ChatFormat { family: ChatFamily::Unrecognised, default_system: None, generation_prompt: chatml_prompt }
    }
}

/// A piece of text a template outputs verbatim: raw text between tags, or a string literal inside a
/// `{{ }}` / `{% %}` tag (escapes resolved). `offset` = byte position in the template.
#[derive(Debug)]
struct TemplatePiece {
    offset: usize,
    text: String,
}

/// Splits a Jinja template into its fixed texts (see [`TemplatePiece`]). Honours the `-` whitespace
/// control of tags on neighbouring raw text; comments `{# #}` are dropped.
fn template_pieces(template: &str) -> Vec<TemplatePiece> {
    let b = template.as_bytes();
    let mut pieces = Vec::new();
    let mut raw_start = 0;
    let mut strip_raw_start = false;
    let mut i = 0;
    let push_raw = |pieces: &mut Vec<TemplatePiece>, start: usize, end: usize, lstrip: bool, rstrip: bool| {
        let mut text = &template[start..end];
        if lstrip {
            text = text.trim_start();
        }
        if rstrip {
            text = text.trim_end();
        }
        if !text.is_empty() {
            pieces.push(TemplatePiece { offset: start, text: text.to_string() });
        }
    };
    while i + 1 < b.len() {
        let close: &[u8] = match (b[i], b[i + 1]) {
            (b'{', b'{') => b"}}",
            (b'{', b'%') => b"%}",
            (b'{', b'#') => b"#}",
            _ => {
                i += 1;
                continue;
            }
        };
        let strip_before = b.get(i + 2) == Some(&b'-');
        push_raw(&mut pieces, raw_start, i, strip_raw_start, strip_before);
        let mut j = i + 2;
        let is_comment = close == b"#}";
        loop {
            if j + 1 >= b.len() {
                j = b.len();
                break;
            }
            if !is_comment && (b[j] == b'\'' || b[j] == b'"') {
                let quote = b[j];
                let start = j + 1;
                let mut k = start;
                while k < b.len() && b[k] != quote {
                    k += if b[k] == b'\\' { 2 } else { 1 };
                }
                let end = k.min(b.len());
                pieces.push(TemplatePiece { offset: j, text: unescape_literal(&template[start..end]) });
                j = end + 1;
                continue;
            }
            if &b[j..j + 2] == close {
                strip_raw_start = j > 0 && b[j - 1] == b'-';
                j += 2;
                break;
            }
            j += 1;
        }
        i = j;
        raw_start = j.min(b.len());
    }
    if raw_start < b.len() {
        push_raw(&mut pieces, raw_start, b.len(), strip_raw_start, false);
    }
    pieces
}

/// Python / Jinja string-literal escapes: `\n \t \r \\ \' \"`; any other backslash stays.
fn unescape_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('\\' | '\'' | '"')) => out.push(c),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A token id field: absent or null -> None, an integer -> Some.
fn single_id_field(path: &Path, json: &Value, field: &str) -> Result<Option<u32>> {
    match json.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(as_token_id(path, field, v)?)),
    }
}

/// A token id field that may be an integer or a list of integers (HF `eos_token_id`).
fn id_list_field(path: &Path, json: &Value, field: &str) -> Result<Vec<u32>> {
    match json.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| as_token_id(path, field, v)).collect(),
        Some(v) => Ok(vec![as_token_id(path, field, v)?]),
    }
}

fn as_token_id(path: &Path, field: &str, v: &Value) -> Result<u32> {
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| Error::config(path, field, format!("expected a token id or a list of them, got {v}")))
}

/// A token written as a string or as an AddedToken object `{"content": ...}`; null -> None.
fn token_string_field(path: &Path, json: &Value, field: &str) -> Result<Option<String>> {
    match json.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(Error::config(path, field, "token object without a string `content`")),
        },
        Some(v) => Err(Error::config(path, field, format!("expected a token string, got {v}"))),
    }
}

fn chat_template_field(path: &Path, json: &Value) -> Result<Option<String>> {
    match json.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => {
            let named: HashMap<&str, &str> = items
                .iter()
                .filter_map(|it| Some((it.get("name")?.as_str()?, it.get("template")?.as_str()?)))
                .collect();
            match named.get("default") {
                Some(t) => Ok(Some(t.to_string())),
                None => Err(Error::config(path, "chat_template", "a list of templates without a `default` one")),
            }
        }
        Some(v) => Err(Error::config(path, "chat_template", format!("expected a string, got {v}"))),
    }
}
