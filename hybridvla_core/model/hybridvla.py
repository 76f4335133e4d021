"""The HybridVLA module: shared vision encoder + projector, an HF causal LM that denoises continuous actions
between <BOD> and <EOD> and then predicts discrete action tokens.

Token layout, identical in training and inference:
    [BOS] [view tokens, in view order] [prompt] [sep] <BOD> [state] [t] [x_1 .. x_T] <EOD> [sep] [a_1 .. a_D] [EOS]
The separators [sep] depend on config.token_layout and the LLM family (text_tokenizer.py: the reference's Llama
path has "▁" on both sides, Phi " " before <BOD> only, "compact" none). The noise prediction is read at the x
positions (no shift); the logits at the last token before a_1 (the trailing separator, or <EOD>) .. a_D predict
a_1 .. EOS.

AR conditioning (config.ar_conditioning), the same in training and inference:
  "denoised" (default, the paper's reading): the AR tokens follow [t = 0, the denoised action]. In training
    the denoised action is the model's own one-step x_0 estimate from the diffusion pass (detached, clipped to
    [-1, 1]), in inference the DDIM result (clipped likewise): one prefill serves both branches.
  "noisy" (the reference): the AR tokens follow the same [random t, noisy action] tokens as the diffusion
    loss; inference then needs a separate AR pass with fresh noise (Policy ar_schedule="reference").
Module names follow the reference checkpoint's key groups (vision_backbone, projector, llm_backbone.llm,
x_embedder, t_embedder, final_layer, proprio_embedder) so that its weights map by name. The optional
privileged_head (config.privileged_dim > 0, training only) has no reference counterpart: export leaves it out.
"""
from __future__ import annotations

import functools
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridvla_core.model.action_tokenizer import NUM_BINS, ActionTokenizer
from hybridvla_core.model.cached_steps import CachedSteps, HFCachedSteps, lean_layers_supported
from hybridvla_core.model.config import LLMConfig, ModelConfig
from hybridvla_core.model.diffusion import DiffusionSchedule
from hybridvla_core.model.text_tokenizer import add_hybrid_tokens, encode_prompt, token_layout
from hybridvla_core.model.vision import build_vision_tower, pool_to_budget

VOCAB_MULTIPLE = 64  # embedding rows are padded to a multiple of 64 (reference)
TIMESTEP_FEATURES = 256


def _llm_classes(family: str):
    import transformers

    names = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "phi": ("PhiConfig", "PhiForCausalLM"),
             "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}[family]
    return getattr(transformers, names[0]), getattr(transformers, names[1])


@functools.cache
def _cache_keyword(decoder_type: type) -> str:
    """The decoder's key/value-cache argument: `cache` in transformers 5.x (which deprecates `past_key_values` and
    drops it in 5.40), `past_key_values` in 4.x, where an unknown `cache=` would be swallowed by **kwargs and the
    cache silently unused."""
    return "cache" if "cache" in inspect.signature(decoder_type.forward).parameters else "past_key_values"


def _build_llm(config: LLMConfig) -> nn.Module:
    config_cls, model_cls = _llm_classes(config.family)
    if config.pretrained:
        return model_cls.from_pretrained(config.path, attn_implementation="sdpa").float()
    if config.path is not None:
        hf_config = config_cls.from_pretrained(config.path)
    else:
        hf_config = config_cls.from_dict(dict(config.hf_config))
    hf_config._attn_implementation = "sdpa"
    return model_cls(hf_config)


def _resize_vocabulary(llm: nn.Module, num_tokens: int, family: str) -> None:
    """Resize the embedding (and LM head) to num_tokens padded to a multiple of 64, as the reference's
    resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64): that shrinks Phi-2's 51200 rows to 50304.
    New rows are the mean of the existing ones (reference). Qwen2 (no reference path) ships a padded vocabulary
    larger than its tokenizer: never shrunk."""
    old_rows = llm.get_input_embeddings().weight.shape[0]
    new_rows = math.ceil(num_tokens / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if family == "qwen2":
        new_rows = max(old_rows, new_rows)
    if new_rows == old_rows:
        return
    llm.resize_token_embeddings(new_rows, mean_resizing=False)
    if new_rows < old_rows:
        return
    with torch.no_grad():
        embedding = llm.get_input_embeddings().weight
        embedding[old_rows:] = embedding[:old_rows].mean(0)
        head = llm.get_output_embeddings()
        if head is not None and head.weight is not embedding:
            head.weight[old_rows:] = head.weight[:old_rows].mean(0)
            if getattr(head, "bias", None) is not None:
                head.bias[old_rows:] = head.bias[:old_rows].mean()


class LLMBackbone(nn.Module):
    def __init__(self, config: LLMConfig, num_tokens: int):
        super().__init__()
        self.llm = _build_llm(config)
        _resize_vocabulary(self.llm, num_tokens, config.family)
        if config.gradient_checkpointing:
            self.llm.gradient_checkpointing_enable()


class Projector(nn.Module):
    """Prismatic projectors: fused (dinov2_siglip) d -> 4d -> H -> H, otherwise d -> H -> H, GELU between."""

    def __init__(self, feature_dim: int, hidden: int, fused: bool):
        super().__init__()
        if fused:
            self.projector = nn.Sequential(nn.Linear(feature_dim, 4 * feature_dim), nn.GELU(),
                                           nn.Linear(4 * feature_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        else:
            self.projector = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)


class Mlp(nn.Module):
    """timm's Mlp as the reference's heads hold it: fc1 -> GELU(tanh) -> fc2 (key names fc1, fc2)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MLPEmbedder(nn.Module):
    """Noisy-action and state embedders (the reference's ActionEmbedder): mlp = Mlp(in -> H -> H)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.mlp = Mlp(in_dim, hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PrivilegedHead(nn.Module):
    """Auxiliary head (issue 30): the projected vision tokens of a sample (what enters the LLM) -> privileged
    simulator state, e.g. the block's and the bowl's positions relative to the gripper. Only the training forward
    runs it; it shapes the vision features, inference never reads it.

    Attention pooling: `queries` learned queries each take a softmax-weighted mean of the tokens and an MLP reads
    the pooled vectors. A plain mean over the tokens (the first version) cannot tell which keypoint token sits
    where: with the keypoints tower it sees little more than the keypoints' centroid (pilot: RMS error ~8 cm)."""

    def __init__(self, hidden: int, out_dim: int, queries: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, hidden) * hidden**-0.5)
        self.mlp = nn.Sequential(nn.Linear(queries * hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def pool(self, vision_embeds: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden) -> (B, queries * hidden): per query, the tokens weighted by softmax(query . token)."""
        scores = torch.einsum("qh,bnh->bqn", self.queries, vision_embeds) * vision_embeds.shape[-1] ** -0.5
        weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bqn,bnh->bqh", weights, vision_embeds).flatten(1)

    def forward(self, vision_embeds: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(vision_embeds))


def masked_privileged_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over the rows of `target` (B, P) that are all finite; a row with any NaN/Inf has no label and
    contributes nothing (neither loss nor gradient). No labelled row: an exact 0 that stays in the graph (the
    head's gradients are zeros, never NaN, and DDP sees the head used)."""
    prediction = prediction.float()
    target = target.to(device=prediction.device, dtype=torch.float32)
    if target.shape != prediction.shape:
        raise ValueError(f"privileged labels must be (batch, {prediction.shape[-1]}), got {tuple(target.shape)}")
    labelled = torch.isfinite(target).all(dim=-1)
    if not bool(labelled.any()):
        return (prediction * 0.0).sum()
    return F.mse_loss(prediction[labelled], target[labelled])


class TimestepEmbedder(nn.Module):
    """DiT: 256-d sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FEATURES, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def sinusoidal(timesteps: torch.Tensor, dim: int = TIMESTEP_FEATURES, max_period: float = 10000.0):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                               device=timesteps.device) / half)
        args = timesteps.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoidal(timesteps).to(self.mlp[0].weight.dtype))


class FinalLayer(nn.Module):
    """RMSNorm -> MLP(H -> H -> action_dim), last linear zero-initialised (the denoiser starts by outputting 0)."""

    def __init__(self, hidden: int, action_dim: int):
        super().__init__()
        self.norm_final = nn.RMSNorm(hidden, eps=1e-6)
        self.mlp = Mlp(hidden, hidden, action_dim)
        nn.init.zeros_(self.mlp.fc2.weight)
        nn.init.zeros_(self.mlp.fc2.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm_final(hidden))


class HybridVLA(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer):
        super().__init__()
        self.layout = token_layout(config.token_layout, config.llm.family)
        config.tokens = add_hybrid_tokens(tokenizer, self.layout)
        self.config = config
        self.tokenizer = tokenizer
        self.vision_backbone = build_vision_tower(config.vision)
        self.llm_backbone = LLMBackbone(config.llm, config.tokens["num_tokens"])
        hidden = self.llm.config.hidden_size
        self.projector = Projector(self.vision_backbone.feature_dim, hidden,
                                   fused=config.vision.kind == "dinov2_siglip")
        self.x_embedder = MLPEmbedder(config.action_dim, hidden)
        self.proprio_embedder = MLPEmbedder(config.action_dim, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.final_layer = FinalLayer(hidden, config.action_dim)
        if config.privileged_dim > 0:  # training-only auxiliary head; absent (no keys) when privileged_dim is 0
            self.privileged_head = PrivilegedHead(hidden, config.privileged_dim)
        self.schedule = DiffusionSchedule.from_config(config.diffusion)
        self.action_tokenizer = ActionTokenizer(config.tokens["base_vocab_size"] - config.need_to_sub)

    # ------------------------------------------------------------------------------------------------ pieces
    @property
    def llm(self) -> nn.Module:
        return self.llm_backbone.llm

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.mlp.fc1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.x_embedder.mlp.fc1.weight.device

    @property
    def tokens_per_image(self) -> int:
        grid = self.vision_backbone.grid
        return sum(min(v.tokens or grid * grid, grid * grid) for v in self.config.views)

    def prompt_ids(self, instruction: str) -> list[int]:
        return encode_prompt(self.tokenizer, instruction, self.layout, self.config.tokens)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, V, 3, S, S) in [0, 1] -> (B, tokens, H): one shared tower + projector for every view,
        each view pooled to its token budget, concatenated in view order."""
        batch, views = pixels.shape[:2]
        features = self.vision_backbone(pixels.flatten(0, 1).to(self.dtype))
        features = features.unflatten(0, (batch, views))
        grid = self.vision_backbone.grid
        pooled = [pool_to_budget(features[:, i], grid, view.tokens) for i, view in enumerate(self.config.views)]
        return self.projector(torch.cat(pooled, dim=1))

    def diffusion_embeds(self, timesteps: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[t] [x_1 .. x_T]: timesteps (B,), actions (B, T, D) -> (B, 1 + T, H)."""
        return torch.cat([self.t_embedder(timesteps).unsqueeze(1), self.x_embedder(actions.to(self.dtype))], dim=1)

    def build_prefix(self, vision_embeds: torch.Tensor, prompts: list[list[int]], states: torch.Tensor):
        """[BOS][views][prompt]<BOD>[state] for a batch. Shorter prompts are padded in place with masked <PAD>
        tokens and positions skip them, so every sample sees the positions of an unpadded sequence and all
        later positions (state, t, x, AR) line up across the batch.
        Returns (embeds (B, L, H), attention_mask (B, L) or None when nothing is padded, position_ids (B, L))."""
        tokens = self.config.tokens
        batch = vision_embeds.shape[0]
        longest = max(len(p) for p in prompts)
        device = vision_embeds.device
        prompt_ids = torch.full((batch, longest), tokens["pad_id"], dtype=torch.long, device=device)
        prompt_mask = torch.zeros((batch, longest), dtype=torch.long, device=device)
        for i, prompt in enumerate(prompts):
            prompt_ids[i, :len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
            prompt_mask[i, :len(prompt)] = 1
        bos = torch.full((batch, 1), tokens["bos_id"], dtype=torch.long, device=device)
        bod = torch.full((batch, 1), tokens["bod_id"], dtype=torch.long, device=device)
        embeds = torch.cat([
            self.embed_ids(bos), vision_embeds.to(self.dtype), self.embed_ids(prompt_ids), self.embed_ids(bod),
            self.proprio_embedder(states.to(self.dtype)).unsqueeze(1),
        ], dim=1)
        ones = lambda n: torch.ones((batch, n), dtype=torch.long, device=device)  # noqa: E731
        mask = torch.cat([ones(1 + vision_embeds.shape[1]), prompt_mask, ones(2)], dim=1)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        return embeds, (None if bool(mask.all()) else mask), position_ids

    def _run_llm(self, embeds, attention_mask=None, position_ids=None, cache=None) -> torch.Tensor:
        decoder = self.llm.model
        cached = {_cache_keyword(type(decoder)): cache} if cache is not None else {}
        out = decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=cache is not None, **cached)
        return out.last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llm.get_output_embeddings()(hidden).float()

    def _ar_targets(self, actions: torch.Tensor) -> torch.Tensor:
        """First action of each chunk (B, D) normalised -> action-bin ids followed by EOS (B, D + 1).
        torch.bucketize(right=True) is np.digitize."""
        bins = torch.as_tensor(self.action_tokenizer.bins, dtype=torch.float32, device=actions.device)
        digitized = torch.bucketize(actions.float().clamp(-1, 1), bins, right=True)
        ids = self.action_tokenizer.base_vocab_size - digitized
        eos = torch.full((ids.shape[0], 1), self.config.tokens["eos_id"], dtype=torch.long, device=ids.device)
        return torch.cat([ids, eos], dim=1)

    def _after_diffusion_ids(self, batch: int, device) -> torch.Tensor:
        """<EOD> and the layout's separator after it: what the first action token follows, (batch, 1 + n)."""
        ids = [self.config.tokens["eod_id"], *self.config.tokens["after_eod_ids"]]
        return torch.tensor(ids, dtype=torch.long, device=device).expand(batch, -1)

    def _ar_tail(self, targets: torch.Tensor) -> torch.Tensor:
        """<EOD> [sep] [a_1 .. a_D] as embeddings (EOS is only a target)."""
        head = self._after_diffusion_ids(targets.shape[0], targets.device)
        return self.embed_ids(torch.cat([head, targets[:, :-1]], dim=1))

    # --------------------------------------------------------------------------------------------- training
    def forward(self, pixels: torch.Tensor, prompts: list[list[int]], states: torch.Tensor, actions: torch.Tensor,
                noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None,
                privileged: torch.Tensor | None = None) -> dict:
        """Training forward. pixels (B, V, 3, S, S) in [0, 1]; prompts: token ids per sample; states (B, D) and
        actions (B, T, D) normalised. Every sample is repeated k = diffusion.repeated_samples times with its own
        noise and t (noise (B*k, T, D) and timesteps (B*k,) may be given). Returns the losses and, for tests,
        denoiser_output (noise or x_0 estimate, as diffusion.prediction_type says) and ar_logits.
        privileged (B, privileged_dim): labels for the privileged head (rows with NaN have none); given to a
        model with the head, the result also holds privileged_loss (masked_privileged_loss), included in
        "loss" unweighted, and privileged_prediction. A model without the head ignores it."""
        repeats = self.config.diffusion.repeated_samples
        batch, chunk = actions.shape[:2]
        vision_embeds = self.encode_images(pixels)
        extra = {}
        if privileged is not None and self.config.privileged_dim > 0:
            prediction = self.privileged_head(vision_embeds).float()
            extra = {"privileged_loss": masked_privileged_loss(prediction, privileged),
                     "privileged_prediction": prediction}
        prefix, mask, positions = self.build_prefix(vision_embeds, prompts, states)
        prefix_len = prefix.shape[1]
        targets = self._ar_targets(actions[:, 0])
        rep = lambda x: None if x is None else x.repeat_interleave(repeats, 0)  # noqa: E731
        clean = rep(actions).float()
        if noise is None:
            noise = torch.randn_like(clean)
        if timesteps is None:
            timesteps = torch.randint(0, self.schedule.train_steps, (batch * repeats,), device=clean.device)
        noisy = self.schedule.add_noise(clean, noise, timesteps)
        pieces = [rep(prefix), self.diffusion_embeds(timesteps, noisy)]
        if self.config.ar_conditioning == "noisy":
            pieces.append(self._ar_tail(rep(targets)))
        sequence = torch.cat(pieces, dim=1)
        hidden = self._run_llm(sequence, self._extend_mask(rep(mask), sequence.shape[1]),
                               self._extend_positions(rep(positions), sequence.shape[1]))
        x_start = prefix_len + 1  # after [t]
        first_logit = x_start + chunk + len(self.config.tokens["after_eod_ids"])  # the token before a_1
        denoiser_output = self.final_layer(hidden[:, x_start:x_start + chunk]).float()
        diffusion_loss = F.mse_loss(denoiser_output, self.schedule.target(clean, noise))

        if self.config.ar_conditioning == "noisy":
            ar_logits = self._logits(hidden[:, first_logit:])
            ar_targets = rep(targets)
        else:
            first = torch.arange(batch, device=clean.device) * repeats  # repeat 0 of every sample
            hint = self.schedule.predict_clean(noisy[first], denoiser_output[first].detach(),
                                               timesteps[first]).clamp(-1, 1)
            zero_t = torch.zeros(batch, dtype=torch.long, device=clean.device)
            sequence = torch.cat([prefix, self.diffusion_embeds(zero_t, hint), self._ar_tail(targets)], dim=1)
            hidden = self._run_llm(sequence, self._extend_mask(mask, sequence.shape[1]),
                                   self._extend_positions(positions, sequence.shape[1]))
            ar_logits = self._logits(hidden[:, first_logit:])
            ar_targets = targets
        ar_loss = F.cross_entropy(ar_logits.flatten(0, 1), ar_targets.flatten())
        loss = diffusion_loss + ar_loss
        if extra:
            loss = loss + extra["privileged_loss"]
        return {"loss": loss, "diffusion_loss": diffusion_loss, "ar_loss": ar_loss,
                "denoiser_output": denoiser_output, "ar_logits": ar_logits, **extra}

    @staticmethod
    def _extend_mask(mask, length):
        if mask is None:
            return None
        return torch.cat([mask, mask.new_ones((mask.shape[0], length - mask.shape[1]))], dim=1)

    @staticmethod
    def _extend_positions(positions, length):
        last = positions[:, -1:]
        extra = torch.arange(1, length - positions.shape[1] + 1, device=positions.device).unsqueeze(0)
        return torch.cat([positions, last + extra], dim=1)

    # -------------------------------------------------------------------------------------------- inference
    @property
    def step_room(self) -> int:
        """Tokens one control step feeds after its prefix: a DDIM step's [t, x_1..x_T], then [t, x_1..x_T, <EOD>,
        sep] and D - 1 action tokens in the same slots."""
        return 1 + self.config.chunk + 1 + len(self.config.tokens["after_eod_ids"]) + self.config.action_dim - 1

    def prefill(self, prefix: torch.Tensor, room: int | None = None):
        """Run the prefix (B, L, H) once; returns the runner that feeds later tokens after it (run(embeds,
        start)), with room for `room` of them (default step_room). Llama/Qwen2/Phi: CachedSteps' static
        buffers; others: the HF model's DynamicCache."""
        if lean_layers_supported(self.llm.model):
            return CachedSteps(self.llm.model, prefix, self.step_room if room is None else room)
        return HFCachedSteps(self, prefix)

    def denoise_cached(self, steps, noise: torch.Tensor, ddim_steps: int) -> torch.Tensor:
        """DDIM against the prefilled prefix (steps: what prefill returned): each step feeds only [t, x_1..x_T]
        right after the prefix, replacing the previous step's 1 + T entries (any T)."""
        sample = noise.float()
        for t in self.schedule.ddim_timesteps(ddim_steps):
            step = torch.full((sample.shape[0],), t, dtype=torch.long, device=sample.device)
            hidden = steps.run(self.diffusion_embeds(step, sample), start=0)
            output = self.final_layer(hidden[:, 1:]).float()
            sample = self.schedule.ddim_step(sample, output, t, ddim_steps)
        steps.finish()
        return sample

    def denoise_uncached(self, prefix: torch.Tensor, noise: torch.Tensor, ddim_steps: int) -> torch.Tensor:
        """The same DDIM with the whole sequence recomputed at every step (baseline and cache check)."""
        sample = noise.float()
        for t in self.schedule.ddim_timesteps(ddim_steps):
            step = torch.full((sample.shape[0],), t, dtype=torch.long, device=sample.device)
            hidden = self._run_llm(torch.cat([prefix, self.diffusion_embeds(step, sample)], dim=1))
            output = self.final_layer(hidden[:, prefix.shape[1] + 1:]).float()
            sample = self.schedule.ddim_step(sample, output, t, ddim_steps)
        return sample

    def _ar_head(self, timesteps: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[t][x_1..x_T]<EOD>[sep] as embeddings: what the AR tokens follow."""
        after = self._after_diffusion_ids(actions.shape[0], actions.device)
        return torch.cat([self.diffusion_embeds(timesteps, actions), self.embed_ids(after)], dim=1)

    def decode_actions(self, steps, timesteps: torch.Tensor, actions: torch.Tensor):
        """Feed [t][x_1..x_T]<EOD>[sep] after the prefilled prefix (steps: what prefill returned; the diffusion's
        entries are overwritten), then greedily decode D action tokens, restricted to
        the action-bin ids. Confidence of a token = its probability under the softmax over the FULL vocabulary
        (the reference's max softmax probability whenever the unrestricted argmax is an action bin, as it is
        for a trained model; lower when the model would rather emit something else).
        Returns (normalised actions (B, D), confidence (B, D), token ids (B, D))."""
        head = self._ar_head(timesteps, actions)
        result = self._greedy_action_tokens(steps, steps.run(head, start=0)[:, -1], start=head.shape[1])
        steps.finish()
        return result

    def decode_actions_uncached(self, prefix: torch.Tensor, timesteps: torch.Tensor, actions: torch.Tensor):
        """decode_actions without a cached prefix: ONE prefill of the prefix and [t][x_1..x_T]<EOD> together,
        then the same greedy tokens after it (the reference's separate AR pass)."""
        steps = self.prefill(torch.cat([prefix, self._ar_head(timesteps, actions)], dim=1),
                             room=self.config.action_dim - 1)
        result = self._greedy_action_tokens(steps, steps.last_hidden, start=0)
        steps.finish()
        return result

    def _greedy_action_tokens(self, steps, hidden: torch.Tensor, start: int):
        """D greedy action tokens from the last hidden state (B, H); token i + 1 is fed at offset start + i."""
        logits = self._logits(hidden)
        first, end = self.action_tokenizer.first_id, self.action_tokenizer.first_id + NUM_BINS
        ids, confidences = [], []
        for i in range(self.config.action_dim):
            token = logits[:, first:end].argmax(-1) + first
            confidences.append(torch.softmax(logits, dim=-1).gather(1, token[:, None])[:, 0])
            ids.append(token)
            if i + 1 < self.config.action_dim:
                logits = self._logits(steps.run(self.embed_ids(token[:, None]), start=start + i)[:, -1])
        ids = torch.stack(ids, dim=1)
        return self.action_tokenizer.decode_torch(ids), torch.stack(confidences, dim=1), ids
