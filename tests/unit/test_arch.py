"""The benchmark's model builder (model/demo/arch.py): the 7B's shapes, the tiny variant's ratios, adapters that load."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch

from model.demo.arch import QWEN25_7B, TINY, Built, build, qwen2_config

VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)


def test_the_big_arch_has_qwen25_7b_shapes() -> None:
    config = qwen2_config(QWEN25_7B, eos_token_id=2, pad_token_id=0)
    assert config.model_type == "qwen2" and not config.tie_word_embeddings
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size) == (
        3584, 28, 18944, 152064)
    assert (config.num_attention_heads, config.num_key_value_heads, QWEN25_7B.head_dim) == (28, 4, 128)
    assert QWEN25_7B.num_kv_heads * QWEN25_7B.head_dim == 512  # k_proj / v_proj: 3584 → 512


def test_the_tiny_arch_keeps_the_7b_ratios() -> None:
    big, tiny = QWEN25_7B, TINY
    assert tiny.hidden_size == tiny.num_heads * tiny.head_dim and tiny.head_dim in VLLM_CPU_HEAD_SIZES
    assert tiny.num_heads // tiny.num_kv_heads == big.num_heads // big.num_kv_heads == 7  # query heads per KV head
    assert Fraction(tiny.intermediate_size, tiny.hidden_size) == Fraction(big.intermediate_size, big.hidden_size)
    assert tiny.num_layers < big.num_layers and tiny.vocab_size < big.vocab_size


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(TINY, tmp_path_factory.mktemp("arch"), adapters=2, rank=8, mlp=True, device="cpu")


def test_tiny_base_is_saved_with_the_arch_and_a_tokenizer_for_every_id(tiny: Built) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny.base_dir)
    layer = model.model.layers[0]
    assert len(model.model.layers) == TINY.num_layers
    assert tuple(layer.self_attn.q_proj.weight.shape) == (224, 224)
    assert tuple(layer.self_attn.k_proj.weight.shape) == (TINY.num_kv_heads * TINY.head_dim, 224)
    assert layer.self_attn.q_proj.bias is not None  # Qwen2: q/k/v carry a bias
    assert tuple(layer.mlp.gate_proj.weight.shape) == (1184, 224)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # untied, as the 7B
    tokenizer = AutoTokenizer.from_pretrained(tiny.base_dir)
    assert len(tokenizer) == TINY.vocab_size
    assert tokenizer.decode([TINY.vocab_size - 1]).strip().isalpha()  # a filler decodes to text
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "FINDINGS: no effusion."}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>user") and max(tokenizer.encode(prompt)) < TINY.vocab_size


def test_tiny_adapters_load_with_peft_and_change_the_output(tiny: Built) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    first, second = sorted(tiny.adapters.values())
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny.base_dir)
    with torch.no_grad():
        plain = base(ids).logits
    adapted = PeftModel.from_pretrained(base, first, adapter_name="a")
    adapted.load_adapter(second, adapter_name="b")
    targets = {name.split(".")[-3] for name, _ in adapted.named_modules() if name.endswith(".lora_B.a")}
    assert targets >= {"q_proj", "v_proj", "gate_proj", "down_proj"}
    with torch.no_grad():
        with_a = adapted(ids).logits
        adapted.set_adapter("b")
        with_b = adapted(ids).logits
    assert not torch.allclose(with_a, plain) and not torch.allclose(with_a, with_b)  # B ≠ 0, each adapter its own


def test_a_matching_build_is_reused(tiny: Built) -> None:
    weights = tiny.base_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = build(TINY, tiny.root, adapters=2, rank=8, mlp=True, device="cpu")
    assert again.adapters == tiny.adapters and weights.stat().st_mtime_ns == before
    assert Path(again.root / "arch.json").is_file()


def test_adapter_tensors_have_the_lora_shapes(tiny: Built) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny.adapters["lora-00"] / "adapter_model.safetensors"), "pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    k_a = next(s for k, s in shapes.items() if "layers.0.self_attn.k_proj.lora_A" in k)
    k_b = next(s for k, s in shapes.items() if "layers.0.self_attn.k_proj.lora_B" in k)
    down_b = next(s for k, s in shapes.items() if "layers.1.mlp.down_proj.lora_B" in k)
    assert k_a == (8, TINY.hidden_size) and k_b == (TINY.num_kv_heads * TINY.head_dim, 8)
    assert down_b == (TINY.hidden_size, 8)
    assert len(shapes) == 2 * 7 * TINY.num_layers  # A and B on q, k, v, o, gate, up, down of every layer


def test_without_weights_the_base_is_config_and_tokenizer_only(tmp_path: Path) -> None:
    import json

    built = build(TINY, tmp_path, adapters=1, rank=8, weights=False, device="cpu")
    config = json.loads((built.base_dir / "config.json").read_text())
    assert not list(built.base_dir.glob("*.safetensors")) and (built.base_dir / "tokenizer.json").is_file()
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["num_key_value_heads"] == TINY.num_kv_heads
    assert config["rope_theta"] == TINY.rope_theta and config["torch_dtype"] == "float32"  # transformers 4 reads these
    assert (built.adapters["lora-00"] / "adapter_config.json").is_file()
