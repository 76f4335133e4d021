"""Cached steps: a few tokens at a time after a prefilled prefix, on key/value buffers allocated once (the DDIM
steps and the greedy action tokens of one control step). HybridVLA.prefill returns one of these runners."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


# A DDIM step (1 + T tokens) or an AR token (1) is a handful of new tokens after a prefix of hundreds. Through
# the HF model (self.llm.model(..., cache=DynamicCache)) such a call took ~20 ms on one CPU core for
# the bench config (hidden 512 x 8 layers, 628 prefix tokens; AMD EPYC, torch 2.13 with MKL 2024.2).
# cProfile of 20 calls:
#   - 62 %: F.linear on 2-3 rows. MKL's fp32 GEMM asked for x @ W^T (F.linear's layout) with that few rows runs
#     2-3x slower than the same products asked as W @ x^T (10.3 vs 4.4 ms for one call's q/k/v/o/gate/up weights);
#   - 8 %: DynamicCache.update concatenates the whole prefix cache with the new keys/values in every layer of
#     every call (20 MB copied per call), and crop() throws them away again;
#   - the rest: the attention itself (~8 %), and per call the causal mask, rotary cos/sin and position ids
#     rebuilt, module and kwargs plumbing.
# CachedSteps runs the prefix itself, writing its keys/values into buffers allocated once with room for the new
# tokens (a call writes its entries in place; "cropping" = the next call writing over the same slots; one set of
# buffers serves a whole control step, nothing is copied), computes rotary cos/sin and masks once per position
# range, and applies the decoder layers' own weights and norms in the HF layer's order. Same math; only the order
# in which a matrix product sums may differ (~1e-6 relative).
# It covers the Llama and Qwen2 layer (pre-norm attention + gated MLP) and Phi's (attention and MLP in parallel
# on one LayerNorm, partial rotary), full attention; other families and sliding-window configs run the same
# calls through the HF model (HFCachedSteps).
# test/core/test_cached_steps.py checks both against recomputing the whole sequence.

_FEW_ROWS = 8  # the row counts of a cached step (a DDIM step's 1 + T tokens, an AR token)
# Which way a few rows multiply fastest depends on the CPU and its BLAS: on AMD EPYC (MKL 2024.2) W @ x^T beat
# F.linear 2-3x (above); on Intel Xeon with AVX-512/AMX F.linear is ~3x faster than W @ x^T (3.4 vs 9.7 ms for one
# step's weights of the bench config, 1 row). So it is measured, once per process and weight shape/dtype.
_TRANSPOSED_FASTER: dict[tuple, bool] = {}


def _transposed_product(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """rows @ weight^T asked as weight @ rows^T, (n, out). x^T must be a transposed view of contiguous rows (a
    contiguous x^T is as slow again); one row goes to the GEMM path as two identical rows (GEMV is no faster)."""
    if rows.shape[0] == 1:
        return torch.mm(weight, rows.expand(2, -1).contiguous().t())[:, :1].t().contiguous()
    return torch.mm(weight, rows.contiguous().t()).t().contiguous()


def _transposed_is_faster(weight: torch.Tensor, rows: int) -> bool:
    """Times both ways on `weight` in turns (median of 5 each), once per (shape, dtype, rows)."""
    key = (tuple(weight.shape), weight.dtype, rows)
    if key not in _TRANSPOSED_FASTER:
        x = torch.randn(rows, weight.shape[1], dtype=weight.dtype)
        times = {True: [], False: []}
        for _ in range(6):
            for transposed in (True, False):
                start = time.perf_counter()
                _transposed_product(x, weight) if transposed else F.linear(x, weight)
                times[transposed].append(time.perf_counter() - start)
        _TRANSPOSED_FASTER[key] = statistics.median(times[True][1:]) < statistics.median(times[False][1:])
    return _TRANSPOSED_FASTER[key]


def _few_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for a handful of rows on CPU, in whichever layout measured faster here (see the
    note above)."""
    rows = x.reshape(-1, x.shape[-1])
    if rows.device.type != "cpu" or rows.shape[0] > _FEW_ROWS or not _transposed_is_faster(weight, rows.shape[0]):
        return F.linear(x, weight, bias)
    out = _transposed_product(rows, weight)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], out.shape[-1])


def _rms_norm(module: nn.Module):
    """The decoder's RMSNorm as one fused call in fp32 (HF's module: ~6 ops); other dtypes keep the module,
    which normalises in fp32 and casts back before the weight."""
    weight, eps = module.weight, module.variance_epsilon
    return lambda x: F.rms_norm(x, weight.shape, weight, eps) if x.dtype == torch.float32 else module(x)


class _Layer:
    """One decoder layer's tensors and settings, looked up once for the per-call loop."""

    def __init__(self, layer: nn.Module, phi: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.q = (attn.q_proj.weight, attn.q_proj.bias)
        self.k = (attn.k_proj.weight, attn.k_proj.bias)
        self.v = (attn.v_proj.weight, attn.v_proj.bias)
        self.out = (attn.dense.weight, attn.dense.bias) if phi else (attn.o_proj.weight, attn.o_proj.bias)
        self.head_dim = attn.head_dim
        self.scale = getattr(attn, "scaling", attn.head_dim ** -0.5)
        self.gqa = attn.num_key_value_groups > 1
        self.qk_norm = (attn.q_layernorm, attn.k_layernorm) if getattr(attn, "qk_layernorm", False) else None
        if phi:  # one LayerNorm for the parallel attention and MLP
            self.norm1 = layer.input_layernorm
            self.fc1, self.fc2, self.act = (mlp.fc1.weight, mlp.fc1.bias), (mlp.fc2.weight, mlp.fc2.bias), mlp.activation_fn
        else:
            self.norm1, self.norm2 = _rms_norm(layer.input_layernorm), _rms_norm(layer.post_attention_layernorm)
            self.gate, self.up, self.down = (mlp.gate_proj.weight, mlp.gate_proj.bias), \
                (mlp.up_proj.weight, mlp.up_proj.bias), (mlp.down_proj.weight, mlp.down_proj.bias)
            self.act = mlp.act_fn


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as the Llama/Qwen2 modules apply it (rotate_half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


_LEAN_DECODERS = ("LlamaModel", "Qwen2Model", "PhiModel")


def lean_layers_supported(decoder: nn.Module) -> bool:
    if type(decoder).__name__ not in _LEAN_DECODERS:
        return False
    config = decoder.config
    sliding = getattr(config, "use_sliding_window", False) or any(
        getattr(layer.self_attn, "sliding_window", None) for layer in decoder.layers)
    return not sliding and not decoder.training


class CachedSteps:
    """Runs the prefix once, then a few tokens at a time after it (Llama/Qwen2 and Phi layers; see the note
    above), on key/value buffers allocated once with room for them: nothing is copied or concatenated per call.
    run(embeds, start) places the tokens at offsets start .. start + n - 1 after the prefix, attending to the
    prefix, to the entries already written before start, and causally among themselves; entries at or after
    start from earlier calls are overwritten (that is the crop). last_hidden: the prefix's last hidden state."""

    def __init__(self, decoder: nn.Module, prefix: torch.Tensor, room: int):
        self.decoder = decoder
        self.phi = type(decoder).__name__ == "PhiModel"  # parallel attention + MLP block, partial rotary
        self.layers = [_Layer(layer, self.phi) for layer in decoder.layers[:decoder.config.num_hidden_layers]]
        self.final_norm = decoder.final_layernorm if self.phi else _rms_norm(decoder.norm)
        batch, length, _ = prefix.shape
        size = (batch, decoder.config.num_key_value_heads, length + room, self.layers[0].head_dim)
        self.keys = [prefix.new_empty(size) for _ in self.layers]
        self.values = [prefix.new_empty(size) for _ in self.layers]
        positions = torch.arange(length + room, device=prefix.device).unsqueeze(0)
        cos, sin = decoder.rotary_emb(prefix, positions)  # (1, length + room, rotary dims), every slot once
        self.cos, self.sin = cos.unsqueeze(1), sin.unsqueeze(1)
        self.rotary_dims = self.cos.shape[-1]  # Phi rotates the first partial_rotary_factor of each head
        self._masks: dict[tuple[int, int], torch.Tensor | None] = {}
        self.prefix_len, self.room = 0, length + room
        self.last_hidden = self.run(prefix, start=0)[:, -1]
        self.prefix_len, self.room = length, room
        self._masks.clear()

    def _mask(self, start: int, count: int) -> torch.Tensor | None:
        """(count, prefix + start + count) boolean: everything before the new tokens, causal among them.
        None for one token (it sees everything written)."""
        key = (start, count)
        if key not in self._masks:
            end = self.prefix_len + start + count
            self._masks[key] = None if count == 1 else torch.ones(
                count, end, dtype=torch.bool, device=self.cos.device).tril(self.prefix_len + start)
        return self._masks[key]

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.rotary_dims == x.shape[-1]:
            return _rotate(x, cos, sin)
        return torch.cat([_rotate(x[..., :self.rotary_dims], cos, sin), x[..., self.rotary_dims:]], dim=-1)

    def _attention(self, layer: _Layer, x, keys, values, end, count, cos, sin, mask) -> torch.Tensor:
        """Self-attention of the new tokens (normed input x) writing their keys/values into the buffers; the
        output before the output projection, (B, count, heads * head_dim)."""
        heads = (x.shape[0], count, -1, layer.head_dim)
        q = _few_rows_linear(x, *layer.q).view(heads).transpose(1, 2)
        k = _few_rows_linear(x, *layer.k).view(heads).transpose(1, 2)
        if layer.qk_norm is not None:
            q, k = layer.qk_norm[0](q), layer.qk_norm[1](k)
        keys[:, :, end - count:end] = self._rotate(k, cos, sin)
        values[:, :, end - count:end] = _few_rows_linear(x, *layer.v).view(heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(self._rotate(q, cos, sin), keys[:, :, :end], values[:, :, :end],
                                             attn_mask=mask, scale=layer.scale, enable_gqa=layer.gqa)
        return out.transpose(1, 2).reshape(x.shape[0], count, -1)

    def run(self, embeds: torch.Tensor, start: int) -> torch.Tensor:
        """embeds (B, n, H) -> last hidden states (B, n, H), after the final norm."""
        count = embeds.shape[1]
        if start + count > self.room:
            raise ValueError(f"{count} tokens at offset {start} exceed the room ({self.room}) after the prefix")
        end = self.prefix_len + start + count
        first = self.prefix_len + start
        cos, sin = self.cos[:, :, first:first + count], self.sin[:, :, first:first + count]
        mask = self._mask(start, count)
        hidden = embeds
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            x = layer.norm1(hidden)
            attended = self._attention(layer, x, keys, values, end, count, cos, sin, mask)
            if self.phi:  # h + dense(attention(x)) + fc2(act(fc1(x))), both from the same normed x
                feed_forward = _few_rows_linear(layer.act(_few_rows_linear(x, *layer.fc1)), *layer.fc2)
                hidden = hidden + _few_rows_linear(attended, *layer.out) + feed_forward
                continue
            hidden = hidden + _few_rows_linear(attended, *layer.out)
            x = layer.norm2(hidden)
            gated = layer.act(_few_rows_linear(x, *layer.gate)) * _few_rows_linear(x, *layer.up)
            hidden = hidden + _few_rows_linear(gated, *layer.down)
        return self.final_norm(hidden)

    def finish(self) -> None:
        pass


class HFCachedSteps:
    """The same interface through the HF model and its DynamicCache (any family): crop to the prefix + start,
    feed the tokens; finish() crops back to the prefix."""

    def __init__(self, model: nn.Module, prefix: torch.Tensor):
        from transformers import DynamicCache

        self.model, self.cache = model, DynamicCache()
        self.last_hidden = model._run_llm(prefix, cache=self.cache)[:, -1]
        self.prefix_len = prefix.shape[1]

    def _crop_to(self, length: int) -> None:
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)  # negative = remove that many trailing positions

    def run(self, embeds: torch.Tensor, start: int) -> torch.Tensor:
        self._crop_to(self.prefix_len + start)
        return self.model._run_llm(embeds, cache=self.cache)

    def finish(self) -> None:
        self._crop_to(self.prefix_len)
