"""Logits of a TwoBP checkpoint computed independently, with numpy, the way
Hugging Face transformers' LlamaForCausalLM computes them (modeling_llama.py:
LlamaRMSNorm, rotate_half RoPE with inv_freq = 1 / theta^(2i/d), causal softmax
attention scaled by 1/sqrt(head_dim), SwiGLU MLP, untied lm_head), reading the
weights by their Hugging Face names and [out, in] layouts.

    python3 scripts/hf_llama_reference.py CHECKPOINT_DIR TOKENS_JSON OUT.npy

TOKENS_JSON is a JSON list of lists of token ids ([batch][sequence]); OUT.npy
receives float64 logits [batch, sequence, vocab].
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def rms_norm(x, weight, eps):
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(variance + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def logits(folder, tokens):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    d, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = d // heads
    eps, theta = config["rms_norm_eps"], config.get("rope_theta", 10000.0)
    batch, length = tokens.shape

    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(length, dtype=np.float64), inv_freq)
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    mask = np.triu(np.full((length, length), -np.inf), k=1)

    h = w["model.embed_tokens.weight"][tokens]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(batch, length, kv_heads, head_dim).transpose(0, 2, 1, 3)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(batch, length, kv_heads, head_dim).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, heads // kv_heads, axis=1)
        v = np.repeat(v, heads // kv_heads, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attention = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        h = h + attention.transpose(0, 2, 1, 3).reshape(batch, length, d) @ w[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate = x @ w[p + "mlp.gate_proj.weight"].T
        up = x @ w[p + "mlp.up_proj.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    h = rms_norm(h, w["model.norm.weight"], eps)
    return h @ w["lm_head.weight"].T


if __name__ == "__main__":
    folder, tokens_path, out_path = sys.argv[1:]
    with open(tokens_path) as f:
        tokens = np.array(json.load(f), dtype=np.int64)
    np.save(out_path, logits(folder, tokens))
