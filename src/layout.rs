//! Where every weight lives inside one flat parameter buffer.
//!
//! Parameters, gradients and both AdamW moments are each one flat allocation in this order, so a
//! load, an optimizer step or a gradient-norm pass is one loop (one launch on the GPU). Names are the
//! Hugging Face tensor names; shapes are the HF shapes (linear weights `[out, in]`).

use crate::config::ModelConfig;
use std::ops::Range;

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
    pub fn new(cfg: &ModelConfig) -> Self {
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
        ParamLayout { entries, embed, layers, final_norm, lm_head, tied: cfg.tie_word_embeddings, total: offset }
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}
