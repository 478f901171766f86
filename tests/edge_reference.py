"""An independent plain-PyTorch reference for edge patching: forward hooks on the Hugging Face modules, one
unpadded prompt at a time, no nnsight and nothing of interp_tests' engine.

Every run rebuilds *every* receiver's input from per-sender contributions rather than shifting its live input:

    input_r = sum over senders s before r of (value_s if s->r is patched else output_s in this run)
              + the attention output biases of the layers before r (and of r's own layer for an MLP receiver)

with output_embed = the input of layer 0, output_{L.H} = (head H's slice of the o_proj input) @ (its rows of the
o_proj weight as [in, out]) and output_{mlp.L} = the MLP's output. A q/k/v receiver's projection slice is
replaced by ``norm_1(input_r) @ W_r + b_r``, an MLP's input by ``norm_2(input_r)``, the final norm's input by
``input_r``. With nothing patched this reproduces the model (which checks the decomposition itself).

Edge semantics (per prompt; m as in circuit_reference): resample values are the sender's output in the
corrupted run, mean values its mean output over the corrupted prompts that reach the position, zero values 0.
sufficiency/resample: corrupted run, circuit edges set to their clean-run outputs; necessity/resample: clean
run, circuit edges set to their corrupted outputs; faithfulness: clean run, universe edges outside the circuit
set to their ablated values.
"""

from __future__ import annotations

import torch

from test_engine import _module

NORMS = {"gpt2": ("ln_1", "ln_2", "transformer.ln_f"), "llama": ("input_layernorm", "post_attention_layernorm", "model.norm")}


def _io(module):
    if isinstance(module, torch.nn.Linear):
        return module.weight.T, module.bias
    return module.weight, module.bias  # GPT-2 Conv1D


class Reference:
    def __init__(self, model):
        self.model = model
        self.hf = model.hf
        self.L, self.H, self.dh = model.n_layers, model.n_heads, model.shape.d_head
        kv = getattr(model.hf.config, "num_key_value_heads", None)
        self.kv = kv or self.H
        self.arch = "gpt2" if model.hf.config.model_type == "gpt2" else "llama"
        self.norm1, self.norm2, self.final = NORMS[self.arch]

    def layer(self, l):
        return self.hf.get_submodule(f"{self.model.adapter.layers}.{l}")

    def senders(self):
        out = ["embed"]
        for l in range(self.L):
            out += [f"{l}.{h}" for h in range(self.H)] + [f"mlp.{l}"]
        return out

    def sender_layer(self, s):
        if s == "embed":
            return -1.0
        return int(s[4:]) + 0.9 if s.startswith("mlp.") else float(s.split(".")[0])

    def receiver_layer(self, r):
        if r == "logits":
            return float(self.L)
        if r.startswith("mlp."):
            return int(r[4:]) + 0.75
        return float(r.split(".")[0])

    def feeds(self, s, r):
        return self.sender_layer(s) < self.receiver_layer(r)

    def receivers(self):
        out = []
        for l in range(self.L):
            out += [f"{l}.{h}.q" for h in range(self.H)] + [f"{l}.{g}.k" for g in range(self.kv)]
            out += [f"{l}.{g}.v" for g in range(self.kv)] + [f"mlp.{l}"]
        return out + ["logits"]

    def edges(self):
        return [f"{s}->{r}" for s in self.senders() for r in self.receivers() if self.feeds(s, r)]

    def _bias(self, layer_below):
        """Sum of o_proj biases of layers < layer_below (a float bound: mlp receivers include their own layer)."""
        total = 0.0
        for l in range(self.L):
            if l < layer_below:
                _, b = _io(_module(self.model, "head", l))
                if b is not None:
                    total = total + b
        return total

    def run(self, ids, patched=None):
        """Last-token logits of one prompt and every sender's output [seq, d] in this run; ``patched`` maps an edge
        label to the sender's value [seq, d] that this receiver receives instead."""
        patched = patched or {}
        outputs = {}
        handles = []

        def record_embed(m, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            outputs["embed"] = x[0].detach().clone()

        handles.append(self.layer(0).register_forward_pre_hook(record_embed, with_kwargs=True))

        def rebuilt(receiver):
            layer = self.receiver_layer(receiver)
            total = self._bias(layer)
            for s in self.senders():
                if self.feeds(s, receiver):
                    total = total + patched.get(f"{s}->{receiver}", outputs[s])
            return total

        for l in range(self.L):
            wo, _ = _io(_module(self.model, "head", l))

            def record_heads(m, args, l=l, wo=wo):
                x = args[0][0]
                for h in range(self.H):
                    sl = slice(h * self.dh, (h + 1) * self.dh)
                    outputs[f"{l}.{h}"] = (x[:, sl] @ wo[sl]).detach()

            handles.append(_module(self.model, "head", l).register_forward_pre_hook(record_heads))
            norm1 = self.layer(l).get_submodule(self.norm1)
            for path, whiches in self._projections(l):
                proj = self.layer(l).get_submodule(path)
                w, b = _io(proj)

                def replace_qkv(m, args, out, l=l, norm1=norm1, whiches=whiches, w=w, b=b):
                    out = out.clone()
                    for which, index, sl in whiches:
                        x = norm1(rebuilt(f"{l}.{index}.{which}")[None])[0]
                        out[0, :, sl] = x @ w[:, sl] + (0 if b is None else b[sl])
                    return out

                handles.append(proj.register_forward_hook(replace_qkv))
            norm2 = self.layer(l).get_submodule(self.norm2)
            mlp = _module(self.model, "mlp", l)
            handles.append(mlp.register_forward_pre_hook(lambda m, args, l=l, norm2=norm2: (norm2(rebuilt(f"mlp.{l}")[None]),)))
            handles.append(mlp.register_forward_hook(lambda m, args, out, l=l: outputs.__setitem__(f"mlp.{l}", out[0].detach().clone())))
        final = self.hf.get_submodule(self.final)
        handles.append(final.register_forward_pre_hook(lambda m, args: (rebuilt("logits")[None],)))
        try:
            with torch.no_grad():
                logits = self.hf(ids[None]).logits[0, -1].float()
        finally:
            for h in handles:
                h.remove()
        return logits, outputs

    def _projections(self, l):
        """(module path, [(which, head index, output slice)]) per projection module."""
        dh = self.dh
        if self.arch == "gpt2":
            n = self.H * dh
            return [("attn.c_attn", [(w, h, slice(i * n + h * dh, i * n + (h + 1) * dh))
                                     for i, w in enumerate("qkv") for h in range(self.H)])]
        return [(f"self_attn.{w}_proj", [(w, h, slice(h * dh, (h + 1) * dh)) for h in range(self.H if w == "q" else self.kv)])
                for w in "qkv"]


def _ids(model, prompt):
    return torch.tensor(model.tokenizer(prompt)["input_ids"])


def _m(logits, answer, wrong):
    return (logits[answer] - logits[wrong]).item()


def reference_edges(model, pairs, circuit, *, test, ablation, universe=None):
    """Per-prompt logit differences {clean, corrupted, patched, empty} of an edge circuit test."""
    ref = Reference(model)
    tok = model.tokenizer
    universe = ref.edges() if universe is None else list(universe)
    circuit = list(circuit)
    means = None
    if ablation == "mean":
        outs = [ref.run(_ids(model, p))[1] for p in pairs.corrupted]
        longest = max(o["embed"].shape[0] for o in outs)
        means = {}
        for s in ref.senders():
            total = torch.zeros(longest, outs[0][s].shape[1])
            count = torch.zeros(longest, 1)
            for o in outs:
                total[: o[s].shape[0]] += o[s]
                count[: o[s].shape[0]] += 1
            means[s] = total / count
    m = {"clean": [], "corrupted": [], "patched": [], "empty": []}
    for i in range(len(pairs)):
        clean_ids, corr_ids = _ids(model, pairs.clean[i]), _ids(model, pairs.corrupted[i])
        a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        clean_logits, clean_out = ref.run(clean_ids)
        corr_logits, corr_out = ref.run(corr_ids)
        seq = len(clean_ids)

        def ablated(s):
            if ablation == "resample":
                return corr_out[s]
            if ablation == "zero":
                return torch.zeros_like(clean_out[s])
            return means[s][:seq]

        def value(edges, source):
            return {e: source(e.split("->")[0]) for e in edges}

        if test == "sufficiency" and ablation == "resample":
            patched = ref.run(corr_ids, value(circuit, lambda s: clean_out[s]))[0]
            empty = corr_logits
        elif test == "necessity" and ablation == "resample":
            patched = ref.run(clean_ids, value(circuit, ablated))[0]
            empty = corr_logits
        elif test == "necessity":
            patched = ref.run(clean_ids, value(circuit, ablated))[0]
            empty = ref.run(clean_ids, value(universe, ablated))[0]
        else:
            kept = set(circuit)
            patched = ref.run(clean_ids, value([e for e in universe if e not in kept], ablated))[0]
            empty = ref.run(clean_ids, value(universe, ablated))[0]
        m["clean"].append(_m(clean_logits, a, w))
        m["corrupted"].append(_m(corr_logits, a, w))
        m["patched"].append(_m(patched, a, w))
        m["empty"].append(_m(empty, a, w))
    return m
