"""Speculative decoding, measured: greedy verification keeps greedy's tokens; the acceptance rate α, the draft's cost
ratio c and the speed-up Leviathan et al. (2023)'s formula predicts from them, beside the speed-up measured; and
speculative sampling's output distribution. Every time comes from `decoding.timing`; draft and target run on the
same device."""

from __future__ import annotations

import pandas as pd
import torch

from labkit import decoding, devices, measure, models, plots, precision, quant
from labkit.decoding import timing
from labkit.experiments.decoding_methods import prompt_ids
from labkit.hardware import resolve_device
from labkit.plots import Measured


def draft_quantizer(device: str | torch.device) -> str:
    """The `quant.QUANTIZERS` entry whose copy of the target drafts on `device`: torch.ao's dynamic int8 on the CPU
    (where int8 kernels beat fp32); on a GPU, where that quantizer does not run, the device's native 16-bit float
    (`precision.native_half`: fp16 on a T4, bf16 on Ampere and later).

    Raises:
        ValueError: an unknown device. CapabilityMissing: CUDA asked for without a GPU.
    """
    dev = resolve_device(device)
    return "int8-dynamic" if dev.type == "cpu" else precision.native_half(dev)


def draft_model(target: str, net, gamma: int):
    """A cheaper copy of the target (`draft_quantizer` of its device) as the draft, on the target's device, set to
    propose exactly `gamma` tokens per round in transformers' assisted generation (no adaptive schedule, no
    confidence cut-off), as the formula assumes.

    Args:
        target: the registry name. net: the loaded target model. gamma: draft tokens per round (>= 1).
    Returns:
        the draft model (a copy: the target is unchanged).
    Raises:
        ValueError: for gamma < 1.
    """
    decoding.check_param("gamma", gamma, gamma >= 1, "gamma >= 1")
    draft = quant.quantize(draft_quantizer(net.device), target, device=net.device, model=net).model
    draft.generation_config.update(num_assistant_tokens=gamma, num_assistant_tokens_schedule="constant",
                                   assistant_confidence_threshold=0.0)
    return draft


def speculative_report(target: str = "smollm2-135m", prompt: str = "Explain in one sentence what a GPU is.",
                       gamma: int = 4, max_new_tokens: int = 32, repeat: int = 3,
                       device: str | torch.device = "auto") -> Measured:
    """Greedy vs speculative decoding with a cheaper copy of the target as draft (`draft_model`; and prompt lookup),
    all on `device`: same tokens, acceptance, the speed-up Leviathan et al.'s formula predicts, and the one measured.

    Each timed row is one `decoding.timing.time_greedy` run (one warm-up, `repeat` timed generations, exactly
    `max_new_tokens` tokens); speed-up = greedy's median generation time / the row's. α comes from labkit's
    `speculative_greedy` (stopping at end of text like generate()), c = the draft's median decode step / the
    target's, and predicted = `decoding.expected_speedup(α, γ, c)`.

    Args:
        target: a registry name. prompt: the text. gamma: draft tokens per round (labkit's loop and transformers').
        max_new_tokens: tokens per generation. repeat: timed generations. device: where target and draft run.
    Returns:
        Measured: table (method, device, seconds, speedup, same_tokens, warmups, repeats; the draft's own row is
        "draft alone") with attrs draft (its quantizer), acceptance_rate, alpha, gamma, cost_ratio, predicted_speedup,
        measured_speedup, accepted, rejected, proposed, target_calls, new_tokens, tokens_per_call,
        predicted_tokens_per_call and labkit_same_tokens; a bar figure of the speed-ups.
    Raises:
        ValueError: for gamma < 1 or an unknown device.
    """
    net, tok = models.load_cached(target, device)
    draft, kind = draft_model(target, net, gamma), draft_quantizer(net.device)
    ids = prompt_ids(tok, prompt).to(net.device)
    label = devices.device_label(net.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    variants = {"greedy (target only)": (net, {}), "draft alone": (draft, {}),
                f"assisted, {kind} draft, γ={gamma} (transformers)": (net, {"assistant_model": draft}),
                "prompt lookup (transformers)": (net, {"prompt_lookup_num_tokens": 3})}
    runs = {name: timing.time_greedy(model, ids, max_new_tokens, repeat=repeat, pad_token_id=pad, **kwargs)
            for name, (model, kwargs) in variants.items()}
    base = runs["greedy (target only)"]
    rows = [{"method": name, "device": label, "seconds": run.total_s, "speedup": base.total_s / run.total_s,
             "same_tokens": run.tokens == base.tokens, "warmups": len(run.warmups_s), "repeats": run.repeats}
            for name, run in runs.items()]
    spec = decoding.speculative_greedy(net, draft, ids, gamma=gamma, max_new_tokens=max_new_tokens)
    with torch.no_grad():  # greedy as generate() runs it, stopping at end of text (the timed runs force the length)
        greedy = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                              do_sample=False, pad_token_id=pad)[0, ids.shape[1]:].tolist()
    new = spec.token_ids[0, ids.shape[1]:].tolist()
    c = runs["draft alone"].tpot_s / base.tpot_s
    table = measure.results_frame(
        rows, model=target, device=label, draft=kind, acceptance_rate=spec.acceptance_rate, alpha=spec.alpha,
        gamma=gamma, cost_ratio=c,
        predicted_speedup=decoding.expected_speedup(spec.alpha, gamma, c), measured_speedup=rows[2]["speedup"],
        accepted=spec.accepted, rejected=spec.rejected, proposed=spec.proposed, target_calls=spec.target_calls,
        new_tokens=len(new), tokens_per_call=len(new) / spec.target_calls, labkit_same_tokens=new == greedy,
        predicted_tokens_per_call=decoding.expected_tokens_per_call(spec.alpha, gamma),
    )  # fmt: skip
    title = f"Speculative decoding: the {kind} draft's α = {spec.alpha:.0%} (γ={gamma}, c={c:.2f})"
    return Measured(table, plots.bars(table, "method", "speedup", title, ylabel="× greedy speed"))


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation distance between two distributions over the same vocabulary: half the L1 distance."""
    return 0.5 * float((a - b).abs().sum())


def speculative_sampling_check(target: str = "smollm2-135m", prompt: str = "Write a short poem about the sea.",
                               draws: int = 20000, seed: int = 0, draft_temperatures: tuple[float, ...] = (1.0, 2.0),
                               device: str | torch.device = "auto") -> Measured:
    """Speculative sampling (`decoding.speculative_sample`) at the prompt's next position: does its output follow the
    target's distribution p, whatever the draft's q? Drafts: the `draft_model` copy at each temperature (2.0: a
    poorer q). The forwards run on `device`; the draws on the CPU (a seeded CPU generator).

    Args:
        target: a registry name. prompt: the text. draws: samples per draft (>= 1). seed: the generator's seed.
        draft_temperatures: temperatures applied to the draft's logits, one row each (> 0). device: see above.
    Returns:
        Measured: table (draft, tv_draft_target = TV(q, p), acceptance measured, acceptance_expected = Σ min(p, q)
        (Leviathan et al., 2023, Corollary 3.6), tv_output_target = TV(output, p), tv_noise_floor = TV of as many
        direct draws from p), attrs draws and greedy_tv = TV(one-hot argmax p, p) = 1 - max p (what greedy
        verification outputs); a bar figure of the TVs.
    Raises:
        ValueError: for draws < 1 or a temperature <= 0.
    """
    decoding.check_param("draws", draws, draws >= 1, "draws >= 1")
    for t in draft_temperatures:
        decoding.check_param("draft temperature", t, t > 0, "temperature > 0")
    net, tok = models.load_cached(target, device)
    kind = draft_quantizer(net.device)
    draft = quant.quantize(kind, target, device=net.device, model=net).model
    ids = prompt_ids(tok, prompt)  # next_logits runs it on the model's device and returns the logits here, on the CPU
    p = decoding.next_logits(net, ids)[0][0].softmax(-1)
    draft_logits = decoding.next_logits(draft, ids)[0][0]
    gen = torch.Generator().manual_seed(seed)
    direct = torch.bincount(torch.multinomial(p, draws, replacement=True, generator=gen), minlength=p.numel()) / draws
    rows = []
    for t in draft_temperatures:
        q = (draft_logits / t).softmax(-1)
        tokens, accepted = decoding.speculative_sample(p, q, draws, gen)
        output = torch.bincount(tokens, minlength=p.numel()) / draws
        rows.append({"draft": f"{kind} copy, T={t}", "tv_draft_target": _tv(q, p),
                     "acceptance": float(accepted.float().mean()),
                     "acceptance_expected": float(torch.minimum(p, q).sum()),
                     "tv_output_target": _tv(output, p), "tv_noise_floor": _tv(direct, p)})
    table = pd.DataFrame(rows)
    table.attrs.update(draws=draws, greedy_tv=1 - float(p.max()), model=target, device=devices.device_label(net.device))
    long = table.melt(id_vars="draft", value_vars=["tv_draft_target", "tv_output_target", "tv_noise_floor"],
                      var_name="distance")
    fig = plots.bars(long, "draft", "value", "Speculative sampling's output follows the target, not the draft",
                     color="distance", ylabel="total variation distance")
    return Measured(table, fig)
