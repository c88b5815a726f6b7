//! Where every weight lives inside one flat parameter buffer.
//!
//! Parameters, gradients and both AdamW moments are each one flat allocation in this order, so a
//! load, an optimizer step or a gradient-norm pass is one loop (one launch on the GPU). Names are the
//! Hugging Face tensor names; shapes are the HF shapes (linear weights `[out, in]`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::ops::Range;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

/// Ranges of one decoder layer's tensors in the flat buffer.
#[derive(Clone, Debug)]
pub struct LayerRanges {
    pub ln1_w: Range<usize>,
    pub q_w: Range<usize>,
    pub q_b: Range<usize>,
    pub k_w: Range<usize>,
    pub k_b: Range<usize>,
    pub v_w: Range<usize>,
    pub v_b: Range<usize>,
    pub o_w: Range<usize>,
    pub ln2_w: Range<usize>,
    pub gate_w: Range<usize>,
    pub up_w: Range<usize>,
    pub down_w: Range<usize>,
}

#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub entries: Vec<ParamEntry>,
    pub embed: Range<usize>,
    pub layers: Vec<LayerRanges>,
    pub final_norm: Range<usize>,
    /// The output projection: the embedding itself when tied.
    pub lm_head: Range<usize>,
    pub tied: bool,
    pub total: usize,
}

impl ParamLayout {
    /// The number of parameters of `cfg`, with every product and sum checked: an error names the
    /// config field whose tensor size overflows (`path` is the config file, for the message).
    pub fn checked_total(cfg: &ModelConfig, path: &Path) -> Result<usize> {
        let overflow = |field: &str| Error::config(path, field, "the model's size overflows (config too large)");
        let mul = |a: usize, b: usize, field: &str| a.checked_mul(b).ok_or_else(|| overflow(field));
        let (c, v, ff) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
        let qd = mul(cfg.num_attention_heads, cfg.head_dim, "num_attention_heads")?;
        let kvd = mul(cfg.num_key_value_heads, cfg.head_dim, "num_key_value_heads")?;
        let embed = mul(v, c, "vocab_size")?;
        // per layer: 2 norms, q (weight + bias), k and v (weight + bias), o, gate, up, down
        let c1 = c.checked_add(1).ok_or_else(|| overflow("hidden_size"))?;
        let attn = [mul(qd, c1, "num_attention_heads")?, mul(kvd, c1, "num_key_value_heads")?];
        let mlp = mul(mul(3, c, "hidden_size")?, ff, "intermediate_size")?;
        let layer = [mul(2, c, "hidden_size")?, attn[0], attn[1], attn[1], mul(c, qd, "num_attention_heads")?, mlp]
            .into_iter()
            .try_fold(0usize, |acc, x| acc.checked_add(x))
            .ok_or_else(|| overflow("hidden_size"))?;
        let layers = mul(layer, cfg.num_hidden_layers, "num_hidden_layers")?;
        let head = if cfg.tie_word_embeddings { 0 } else { embed };
        [embed, layers, c, head].into_iter().try_fold(0usize, |acc, x| acc.checked_add(x)).ok_or_else(|| overflow("num_hidden_layers"))
    }

    /// The layout of `cfg`, or a config error when its sizes overflow.
    pub fn try_new(cfg: &ModelConfig) -> Result<Self> {
        Self::checked_total(cfg, Path::new("config.json"))?;
        Ok(Self::new(cfg))
    }

    /// The layout of `cfg`. Panics when the sizes overflow: configs read from a file have been
    /// checked ([`ModelConfig::from_json`]); use [`ParamLayout::try_new`] for one built by hand.
    pub fn new(cfg: &ModelConfig) -> Self {
        let total = Self::checked_total(cfg, Path::new("config"))
            .unwrap_or_else(|e| panic!("ParamLayout::new on an unchecked config: {e}"));
        let (c, v, ff) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let mut entries = Vec::new();
        let mut offset = 0;
        let mut add = |name: String, shape: Vec<usize>| -> Range<usize> {
            let e = ParamEntry { name, shape, offset };
            offset += e.numel();
            let r = e.range();
            entries.push(e);
            r
        };
        let embed = add("model.embed_tokens.weight".into(), vec![v, c]);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(LayerRanges {
                ln1_w: add(format!("{p}.input_layernorm.weight"), vec![c]),
                q_w: add(format!("{p}.self_attn.q_proj.weight"), vec![qd, c]),
                q_b: add(format!("{p}.self_attn.q_proj.bias"), vec![qd]),
                k_w: add(format!("{p}.self_attn.k_proj.weight"), vec![kvd, c]),
                k_b: add(format!("{p}.self_attn.k_proj.bias"), vec![kvd]),
                v_w: add(format!("{p}.self_attn.v_proj.weight"), vec![kvd, c]),
                v_b: add(format!("{p}.self_attn.v_proj.bias"), vec![kvd]),
                o_w: add(format!("{p}.self_attn.o_proj.weight"), vec![c, qd]),
                ln2_w: add(format!("{p}.post_attention_layernorm.weight"), vec![c]),
                gate_w: add(format!("{p}.mlp.gate_proj.weight"), vec![ff, c]),
                up_w: add(format!("{p}.mlp.up_proj.weight"), vec![ff, c]),
                down_w: add(format!("{p}.mlp.down_proj.weight"), vec![c, ff]),
            });
        }
        let final_norm = add("model.norm.weight".into(), vec![c]);
        let lm_head = if cfg.tie_word_embeddings { embed.clone() } else { add("lm_head.weight".into(), vec![v, c]) };
        assert_eq!(offset, total, "ParamLayout::new: checked_total disagrees with the layout");
        ParamLayout { entries, embed, layers, final_norm, lm_head, tied: cfg.tie_word_embeddings, total }
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}
