//! Model configuration, read from a Hugging Face `config.json` (Qwen2 field names).
//!
//! Both transformers 4 (`rope_theta`, `torch_dtype` at top level) and transformers 5
//! (`rope_parameters.rope_theta`, `dtype`) layouts are accepted. Configs that ask for something the
//! model does not compute (sliding-window attention, rope scaling, another activation) are rejected
//! with an "unsupported" error instead of silently computing something else.

use crate::error::{read_json, Error, Result};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The checkpoint's declared dtype (`torch_dtype` / `dtype`), informational.
    pub torch_dtype: Option<String>,
}

/// Upper bounds on the size fields: far above any real checkpoint (Qwen2.5-72B: hidden 8192, MLP 29568,
/// 80 layers, 64 heads, vocab 152064, 131072 positions), low enough that no size computed from them
/// overflows (every parameter count fits in 2^60) and that a typo is an error, not an abort.
const MAX_SIZES: [(&str, usize); 8] = [
    ("vocab_size", 1 << 31), // ids are u32
    ("hidden_size", 1 << 20),
    ("intermediate_size", 1 << 22),
    ("num_hidden_layers", 1 << 12),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 14),
    ("max_position_embeddings", 1 << 30),
];

/// A size field's rule, shared by config.json parsing and [`ModelConfig::validate`]: 1 ≤ n ≤ its cap.
fn check_size(path: &Path, name: &str, n: u64) -> Result<usize> {
    let max = MAX_SIZES.iter().find(|(f, _)| *f == name).map_or(usize::MAX, |&(_, m)| m);
    if n == 0 {
        return Err(Error::config(path, name, "expected a positive integer, got 0"));
    }
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| Error::config(path, name, format!("{n} is too large (at most {max} is accepted)")))
}

fn field_usize(v: &Value, path: &Path, name: &str) -> Result<usize> {
    match v.get(name) {
        None | Some(Value::Null) => Err(Error::config(path, name, "missing (required)")),
        Some(x) => {
            let n = x.as_u64().ok_or_else(|| Error::config(path, name, format!("expected a positive integer, got {x}")))?;
            check_size(path, name, n)
        }
    }
}

fn field_f64(v: &Value, path: &Path, name: &str) -> Result<Option<f64>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(Some)
            .ok_or_else(|| Error::config(path, name, format!("expected a positive number, got {x}"))),
    }
}

/// A token id or a list of them (`eos_token_id` may be either).
pub fn token_ids(v: Option<&Value>, path: &Path, name: &str) -> Result<Vec<u32>> {
    let bad = |x: &Value| Error::config(path, name, format!("expected a token id or a list of ids, got {x}"));
    // an id past u32 is an error, not truncated to another token
    let id = |x: &Value| -> Result<u32> {
        let i = x.as_u64().ok_or_else(|| bad(x))?;
        u32::try_from(i).map_err(|_| Error::config(path, name, format!("token id {i} does not fit in 32 bits")))
    };
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(id).collect(),
        Some(x) => Ok(vec![id(x)?]),
    }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        Self::from_json(&v, path)
    }

    /// Parses a config.json value; `path` is only used in error messages.
    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::json(path, "expected a JSON object"));
        }
        let unsupported = |what: String| Error::Unsupported { path: path.to_path_buf(), what };
        if let Some(t) = v.get("model_type").and_then(Value::as_str) {
            if t != "qwen2" {
                return Err(unsupported(format!("model_type `{t}` (only `qwen2` is implemented)")));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(unsupported(format!("hidden_act `{act}` (only `silu` is implemented)")));
            }
        }
        // Qwen2 checkpoints carry a `sliding_window` size even when it is off; only the switch counts.
        if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return Err(unsupported("sliding-window attention (`use_sliding_window: true`)".into()));
        }
        if v.get("rope_scaling").is_some_and(|x| !x.is_null()) {
            return Err(unsupported("rope scaling (`rope_scaling` is set)".into()));
        }
        let rope_params = v.get("rope_parameters").filter(|x| !x.is_null());
        if let Some(rp) = rope_params {
            let kind = rp.get("rope_type").or_else(|| rp.get("type")).and_then(Value::as_str).unwrap_or("default");
            if kind != "default" {
                return Err(unsupported(format!("rope type `{kind}` in `rope_parameters` (only `default`)")));
            }
        }
        let hidden_size = field_usize(v, path, "hidden_size")?;
        let num_attention_heads = field_usize(v, path, "num_attention_heads")?;
        let num_key_value_heads = match v.get("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            Some(_) => field_usize(v, path, "num_key_value_heads")?,
        };
        let head_dim = match v.get("head_dim") {
            None | Some(Value::Null) => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::config(
                        path,
                        "hidden_size",
                        format!("{hidden_size} is not a multiple of num_attention_heads = {num_attention_heads}"),
                    ));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => field_usize(v, path, "head_dim")?,
        };
        let rope_theta = match field_f64(v, path, "rope_theta")? {
            Some(t) => t,
            None => match rope_params {
                Some(rp) => field_f64(rp, path, "rope_theta")?.unwrap_or(10000.0),
                None => 10000.0,
            },
        };
        let tie = match v.get("tie_word_embeddings") {
            None | Some(Value::Null) => false, // the transformers default for Qwen2Config
            Some(Value::Bool(b)) => *b,
            Some(x) => return Err(Error::config(path, "tie_word_embeddings", format!("expected a boolean, got {x}"))),
        };
        let bos = token_ids(v.get("bos_token_id"), path, "bos_token_id")?;
        let dtype = v.get("torch_dtype").or_else(|| v.get("dtype")).and_then(Value::as_str).map(str::to_string);
        let cfg = ModelConfig {
            vocab_size: field_usize(v, path, "vocab_size")?,
            hidden_size,
            intermediate_size: field_usize(v, path, "intermediate_size")?,
            num_hidden_layers: field_usize(v, path, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope_theta,
            rms_norm_eps: field_f64(v, path, "rms_norm_eps")?.unwrap_or(1e-6),
            max_position_embeddings: field_usize(v, path, "max_position_embeddings")?,
            tie_word_embeddings: tie,
            bos_token_id: bos.first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id"), path, "eos_token_id")?,
            torch_dtype: dtype,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The rules every model configuration obeys, whether read from a config.json or built by a
    /// command (`drpo sft`): sizes within [1, cap], kv heads dividing the heads, an even head_dim,
    /// positive finite rope theta and eps, and a parameter count that is computable. A configuration
    /// that passes is one every command can load. `path` names the source in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (name, n) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            check_size(path, name, n as u64)?;
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::config(
                path,
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads = {}", self.num_key_value_heads, self.num_attention_heads),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::config(path, "head_dim", format!("{} is odd; rotary embedding needs pairs", self.head_dim)));
        }
        for (name, x) in [("rope_theta", self.rope_theta), ("rms_norm_eps", self.rms_norm_eps)] {
            if !(x.is_finite() && x > 0.0) {
                return Err(Error::config(path, name, format!("expected a positive number, got {x}")));
            }
        }
        // every size derived from the config (tensor sizes, the parameter count) must be computable
        crate::layout::ParamLayout::checked_total(self, path)?;
        Ok(())
    }

    /// A config.json that transformers (4 and 5) and this loader both read back to the same model.
    pub fn to_json(&self) -> Value {
        let eos: Value = match self.eos_token_ids.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": self.torch_dtype.clone().unwrap_or_else(|| "float32".into()),
            "use_sliding_window": false,
            "sliding_window": null,
            "attention_dropout": 0.0,
            "use_cache": true,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}
