"""Model presets: the (N, K) of each distinct linear layer of a model, unsharded (TP=1).

Shapes follow ``torch.nn.Linear.weight``: (out_features, in_features). Fused projections are fused
the way engines load them (q, k and v as one ``qkv``; gate and up as one ``gate_up``).

Sources (the models' published ``config.json`` on the Hugging Face Hub):

* llama-3-8b (meta-llama/Meta-Llama-3-8B): hidden_size 4096, intermediate_size 14336,
  num_attention_heads 32, num_key_value_heads 8, head_dim 128. qkv = 4096 + 2 * 8 * 128 = 6144.
* llama-3-70b (meta-llama/Meta-Llama-3-70B): hidden_size 8192, intermediate_size 28672,
  num_attention_heads 64, num_key_value_heads 8, head_dim 128. qkv = 8192 + 2 * 8 * 128 = 10240.
* deepseek-v3 (deepseek-ai/DeepSeek-V3): hidden_size 7168, intermediate_size 18432 (the dense
  MLP of the first three layers), moe_intermediate_size 2048 (routed and shared experts),
  num_attention_heads 128, q_lora_rank 1536, kv_lora_rank 512, qk_nope_head_dim 128,
  qk_rope_head_dim 64, v_head_dim 128 (multi-head latent attention).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PresetLayer", "PRESETS", "preset_layers"]


@dataclass(frozen=True)
class PresetLayer:
    """One linear layer of a model: a label for tables and its weight shape."""

    label: str
    n: int
    k: int
    source: str


PRESETS: dict[str, tuple[PresetLayer, ...]] = {
    "llama-3-8b": (
        PresetLayer("qkv", 6144, 4096, "q 32x128 + k 8x128 + v 8x128 outputs, hidden 4096 in"),
        PresetLayer("o", 4096, 4096, "o_proj: 32x128 in, hidden 4096 out"),
        PresetLayer("gate_up", 28672, 4096, "gate and up: 2 x intermediate 14336"),
        PresetLayer("down", 4096, 14336, "down_proj: intermediate 14336 in"),
    ),
    "llama-3-70b": (
        PresetLayer("qkv", 10240, 8192, "q 64x128 + k 8x128 + v 8x128 outputs, hidden 8192 in"),
        PresetLayer("o", 8192, 8192, "o_proj: 64x128 in, hidden 8192 out"),
        PresetLayer("gate_up", 57344, 8192, "gate and up: 2 x intermediate 28672"),
        PresetLayer("down", 8192, 28672, "down_proj: intermediate 28672 in"),
    ),
    "deepseek-v3": (
        PresetLayer("dense_down", 7168, 18432, "dense-MLP down_proj (layers 0-2): 18432 in"),
        PresetLayer("dense_gate", 18432, 7168, "dense-MLP gate_proj or up_proj: 18432 out"),
        PresetLayer("shared_gate_up", 4096, 7168, "shared expert gate and up: 2 x 2048"),
        PresetLayer("q_a_kv_a", 2112, 7168, "q_a_proj 1536 + kv_a_proj_with_mqa 512 + 64 (fused)"),
        PresetLayer("q_b", 24576, 1536, "q_b_proj: 128 heads x (128 + 64), q_lora_rank 1536 in"),
        PresetLayer("o", 7168, 16384, "o_proj: 128 heads x v_head_dim 128 in"),
    ),
}


def preset_layers(name: str) -> tuple[PresetLayer, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; expected one of: {', '.join(sorted(PRESETS))}"
        ) from None
