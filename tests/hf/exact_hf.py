"""transformers' Qwen2 in true float64: shared by make_fixture.py and check_checkpoint.py (run by hand, never by
`cargo test`; needs torch + transformers, tested with torch 2.15.0 and transformers 5.24.0).

Stock transformers computes three spots in float32 even for a float64 model: RMSNorm (`.to(torch.float32)`), the
eager attention softmax (`softmax(..., dtype=torch.float32)`) and the rotary embedding (inv_freq built in float32 at
init, then freqs / cos / sin in float32). Inside `exact_f64()` those three are replaced by the same formulas in the
model's dtype, so a float64 model is float64 throughout (agreement with an independent float64 implementation
~1e-15 relative, see tests/fixtures/qwen2-odd/README.md). Outside it transformers is untouched.
"""

import contextlib

import torch
from transformers import AutoModelForCausalLM
from transformers.models.qwen2 import modeling_qwen2 as mq

F64 = torch.float64


def _rmsnorm_f64(self, hidden_states):
    # stock: hidden_states.to(torch.float32) first; the same formula in the input dtype
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _eager_attention_f64(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    # stock: softmax(..., dtype=torch.float32).to(query.dtype)
    key_states = mq.repeat_kv(key, module.num_key_value_groups)
    value_states = mq.repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1)
    attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _rotary_f64(self, x, position_ids):
    # stock: inv_freq computed in float32 at init, freqs/cos/sin in float32, then cast to x.dtype
    cfg = self.config
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    base = cfg.rope_parameters["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=F64) / dim))
    freqs = position_ids[..., None].to(F64) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


# how often each patched function ran (a caller can assert that none was bypassed)
PATCH_CALLS = {"rmsnorm": 0, "softmax": 0, "rope": 0}


def _counted(key, fn):
    def wrapper(*a, **k):
        PATCH_CALLS[key] += 1
        return fn(*a, **k)

    return wrapper


@contextlib.contextmanager
def exact_f64():
    """Inside: transformers' Qwen2 keeps RMSNorm, the eager softmax and RoPE in the model dtype (float64)."""
    saved = (mq.Qwen2RMSNorm.forward, mq.eager_attention_forward, mq.Qwen2RotaryEmbedding.forward)
    mq.Qwen2RMSNorm.forward = _counted("rmsnorm", _rmsnorm_f64)
    mq.eager_attention_forward = _counted("softmax", _eager_attention_f64)
    mq.Qwen2RotaryEmbedding.forward = _counted("rope", _rotary_f64)
    try:
        yield
    finally:
        mq.Qwen2RMSNorm.forward, mq.eager_attention_forward, mq.Qwen2RotaryEmbedding.forward = saved


def load_hf(folder):
    """AutoModelForCausalLM from a folder, float64 weights, eager attention, eval mode."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=F64, attn_implementation="eager")
    model.eval()
    return model
