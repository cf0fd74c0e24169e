#!/usr/bin/env python3
"""Faithfulness peer for `captioner train`: trains a PyTorch reference of our decoder on OUR artifacts.

It reads the prepared dataset (prepared/vocab.json, train.jsonl, val.jsonl: token ids with start and end,
no padding) and the feature cache (manifest.json + part-*.json fragments + chunk-*.bin rows of little-
endian float32 or float16; the first chunk holding a key wins, base manifest first, then fragments by
file name; caches of format versions 1 and 2 list their chunks under "shards"), so both sides train on
exactly the same data, and trains the same model with the same hyper-parameters, loss and validation loss:

merge (src/model/decoder.ts): features standardised per dimension (mean / population std over the unique
  training images, each std floored at the mean std) -> Dropout -> Dense(imageUnits, relu);
  tokens -> Embedding(uniform +-0.05) -> Dropout -> LSTM(units; gates i, f, g, o; glorot kernel,
  orthogonal recurrent kernel, forget bias 1) -> add or concat with the image -> Dense(hiddenUnits, relu)
  -> Dense(vocab); loss = mean cross-entropy over the real (non-pad) target tokens of the batch.
attention (src/model/decoders/attention.ts): soft attention with gating beta, deep output and the
  doubly stochastic regulariser (training loss only; the validation loss is the cross-entropy alone).
transformer (src/model/decoders/transformer.ts): pre-LN Transformer decoder blocks (masked self-attention,
  cross-attention over the projected, position-embedded and normalised image grid, ReLU feed-forward),
  sqrt(D)-scaled word embeddings plus sinusoidal or learned positions, a final LayerNorm and a tied or
  untied output layer; written out op by op (not nn.TransformerDecoder, which is post-LN by default and
  fuses its projections differently) so that our weights load one to one.

Training: Adam (beta 0.9 / 0.999, epsilon 1e-7 as ours) with global-norm clipping, batches of captions
shuffled every epoch, no early stopping and no learning-rate decay (the bench turns both off on our side
too). The LSTM has one bias per gate, as ours (Keras) has: torch's second bias (bias_hh) is held at 0 and
not trained, else Adam would move the gate biases twice as fast as ours.

The recipe follows ours (src/config/schema.ts): --init-scheme (model.init: keras as described above, or
torch: PyTorch's own layer defaults, the LSTM's two biases summed into the one kept, as
src/model/spec.ts draws them), --label-smoothing (train.labelSmoothing: CrossEntropyLoss(label_smoothing)
on the training loss only) and --warmup-steps (train.warmupSteps: lr x min(1, step / W), step from 1).

Exact mode (--init and --order, with --dropout 0): the model starts from OUR initial weights (a run
folder's weights.json + weights.bin, e.g. last/ of a run interrupted before its first step) and trains on
the batches in the order our trainer drew them (a JSON file the bench computes with src/train/data.ts's
functions), so that the two sides differ only in float arithmetic and in real implementation differences.
Without them, initialisation and shuffling use --seed (the comparison is then over several seeds).

Per epoch it prints a JSON line {"epoch", "trainLoss", "valLoss"}; trainLoss is the token-weighted mean
of the batch losses (dropout on), valLoss the token-weighted mean cross-entropy over the whole val split
(dropout off), as src/train/run.ts computes them. The last line is a summary {"done": true, ...}. Run it with
/usr/bin/python3 (Debian python3-torch).
"""
import argparse
import json
import math
import os
import re
import sys
import time

PART_RE = re.compile(r"^part-([A-Za-z0-9_]+)\.json$")


# ------------------------------------------------------------------------------------------ our artifacts


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_prepared(d):
    with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)["tokens"]
    splits = {}
    for s in ("train", "val"):
        p = os.path.join(d, f"{s}.jsonl")
        splits[s] = read_jsonl(p) if os.path.exists(p) else []
    return vocab, splits


def examples_of(images, limit=0):
    """One (image, tokens) per caption in file order, captions under 2 tokens skipped (src/train/data.ts)."""
    out = []
    for im in images:
        for t in im["tokens"]:
            if len(t) < 2:
                continue
            out.append((im["image"], t))
            if limit > 0 and len(out) >= limit:
                return out
    return out


def chunk_list(m):
    """A manifest's or fragment's data files: "chunks" from format version 3 on, "shards" before."""
    return (m.get("chunks") if m.get("version", 0) >= 3 else m.get("shards")) or []


def read_feature_cache(d, keys):
    """{key: float32 vector (or [P, C] grid flattened)} for `keys`, and the per-image shape."""
    import numpy as np

    with open(os.path.join(d, "manifest.json"), encoding="utf-8") as f:
        base = json.load(f)
    if base.get("kind") != "captioner.features":
        raise SystemExit(f"{d}/manifest.json: not a captioner feature cache")
    chunks = list(chunk_list(base))
    for name in sorted(n for n in os.listdir(d) if PART_RE.match(n)):
        with open(os.path.join(d, name), encoding="utf-8") as f:
            part = json.load(f)
        if part.get("fingerprint") != base["fingerprint"]:
            raise SystemExit(f"{d}/{name}: fragment computed with other settings than manifest.json")
        chunks.extend(chunk_list(part))
    dtype = {"float32": "<f4", "float16": "<f2"}[base["dtype"]]
    shape = base["shape"]
    dim = 1
    for s in shape:
        dim *= s
    want = set(keys)
    got = {}
    for ch in chunks:
        if not want.intersection(ch["keys"]):
            continue
        rows = np.fromfile(os.path.join(d, ch["file"]), dtype=dtype)
        if rows.size != ch["rows"] * dim:
            continue  # a damaged chunk: our reader skips it too
        rows = rows.reshape(ch["rows"], dim).astype(np.float32)
        for i, k in enumerate(ch["keys"]):
            if k in want and k not in got:  # the first chunk holding a key wins
                got[k] = rows[i]
    missing = want.difference(got)
    if missing:
        raise SystemExit(f"{d}: no vectors for {len(missing)} images (e.g. {sorted(missing)[:3]})")
    return got, shape


def feature_norm(vectors, channels):
    """computeFeatureNorm: per-channel mean and population std in float64, std floored at the mean std.
    `vectors` is [N, D] (merge) or [N * P, C] (attention, every position a sample of its channels)."""
    import numpy as np

    x = vectors.reshape(-1, channels).astype(np.float64)
    mean = x.mean(0)
    raw = np.sqrt(np.maximum(0.0, (x * x).mean(0) - mean * mean))
    floor = raw.mean() if raw.sum() > 0 else 1.0
    return mean.astype(np.float32), np.maximum(raw, floor).astype(np.float32)


# ------------------------------------------------------------------------------------------ models


def torch_lstm_bias(torch, bias_ih, bias_hh):
    """--init-scheme torch: PyTorch's own LSTM init, its two biases summed into bias_ih (ours has one per gate)."""
    with torch.no_grad():
        bias_ih.add_(bias_hh)
        bias_hh.zero_()
    bias_hh.requires_grad_(False)


def keras_lstm_init(torch, lstm, units):
    """Ours: glorot-uniform input kernel [E, 4U], orthogonal recurrent kernel with orthonormal rows [U, 4U],
    zero bias except forget gate 1. PyTorch keeps the transposes ([4U, E], [4U, U]) and two biases."""
    from torch import nn

    nn.init.xavier_uniform_(lstm.weight_ih_l0)
    nn.init.orthogonal_(lstm.weight_hh_l0)  # [4U, U]: orthonormal columns = our rows
    with torch.no_grad():
        lstm.bias_ih_l0.zero_()
        lstm.bias_hh_l0.zero_()
        lstm.bias_ih_l0[units:2 * units] = 1.0
    lstm.bias_hh_l0.requires_grad_(False)  # one bias per gate, as ours


def dense(torch, fan_in, fan_out, scheme="keras"):
    from torch import nn

    d = nn.Linear(fan_in, fan_out)
    if scheme == "torch":  # nn.Linear's default: weight and bias uniform in +-1/sqrt(fan_in)
        return d
    nn.init.xavier_uniform_(d.weight)
    nn.init.zeros_(d.bias)
    return d


def build_merge(torch, a, vocab, feat_dim, mean, std):
    from torch import nn

    class Merge(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("scale", torch.from_numpy(1.0 / std))
            self.drop = nn.Dropout(a.dropout)
            keras = a.init_scheme == "keras"
            self.img = dense(torch, feat_dim, a.image_units, a.init_scheme)
            self.emb = nn.Embedding(vocab, a.embed)  # torch: N(0, 1)
            if keras:
                nn.init.uniform_(self.emb.weight, -0.05, 0.05)
            self.lstm = nn.LSTM(a.embed, a.units, batch_first=True)
            if keras:
                keras_lstm_init(torch, self.lstm, a.units)
            else:
                torch_lstm_bias(torch, self.lstm.bias_ih_l0, self.lstm.bias_hh_l0)
            merge_dim = a.units if a.merge == "add" else a.units + a.image_units
            self.hidden = dense(torch, merge_dim, a.hidden_units, a.init_scheme)
            self.out = dense(torch, a.hidden_units, vocab, a.init_scheme)

        def forward(self, feats, inputs, mask):
            """feats [B, D] raw, inputs [B, T], mask [B, T] (real target) -> (logits [P, V], aux loss)."""
            x = self.drop((feats - self.mean) * self.scale)
            img = torch.relu(self.img(x))  # [B, I]
            h, _ = self.lstm(self.drop(self.emb(inputs)))  # [B, T, U]
            img = img.unsqueeze(1).expand(-1, h.shape[1], -1)  # [B, T, I]
            m = h + img if a.merge == "add" else torch.cat([h, img], 2)
            hid = torch.relu(self.hidden(m[mask]))  # [P, H]
            return self.out(hid), None

    return Merge()


def build_attention(torch, a, vocab, shape, mean, std):
    """Show, Attend and Tell as src/model/decoders/attention.ts describes it (header comment)."""
    from torch import nn

    P = shape[0] * shape[1] if len(shape) == 3 else shape[0]
    C = shape[-1]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("scale", torch.from_numpy(1.0 / std))
            keras, sch = a.init_scheme == "keras", a.init_scheme
            self.emb = nn.Embedding(vocab, a.embed)  # torch: N(0, 1)
            if keras:
                nn.init.uniform_(self.emb.weight, -0.05, 0.05)
            self.init_h = dense(torch, C, a.units, sch)
            self.init_c = dense(torch, C, a.units, sch)
            self.enc = dense(torch, C, a.attention_dim, sch)
            self.dec = nn.Linear(a.units, a.attention_dim, bias=False)
            self.score = nn.Linear(a.attention_dim, 1, bias=False)
            self.beta = dense(torch, a.units, 1, sch)
            self.cell = nn.LSTMCell(a.embed + C, a.units)
            self.l_h = nn.Linear(a.units, a.embed, bias=False)
            self.l_z = nn.Linear(C, a.embed, bias=True)
            if keras:
                nn.init.xavier_uniform_(self.dec.weight)
                nn.init.xavier_uniform_(self.score.weight)
                with torch.no_grad():  # ours: two glorot kernels, lstm/kernel [E, 4U] and lstm/context [C, 4U]
                    nn.init.xavier_uniform_(self.cell.weight_ih[:, :a.embed])
                    nn.init.xavier_uniform_(self.cell.weight_ih[:, a.embed:])
                nn.init.orthogonal_(self.cell.weight_hh)
                with torch.no_grad():
                    self.cell.bias_ih.zero_()
                    self.cell.bias_hh.zero_()
                    self.cell.bias_ih[a.units:2 * a.units] = 1.0
                self.cell.bias_hh.requires_grad_(False)  # one bias per gate, as ours
                nn.init.xavier_uniform_(self.l_h.weight)
                nn.init.xavier_uniform_(self.l_z.weight)
                nn.init.zeros_(self.l_z.bias)
            else:
                torch_lstm_bias(torch, self.cell.bias_ih, self.cell.bias_hh)
            self.drop = nn.Dropout(a.dropout)
            self.out = dense(torch, a.embed, vocab, sch)

        def forward(self, feats, inputs, mask):
            B, T = inputs.shape
            ann = ((feats.view(B, P, C) - self.mean) * self.scale)  # [B, P, C]
            avg = ann.mean(1)
            h, c = torch.tanh(self.init_h(avg)), torch.tanh(self.init_c(avg))
            enc = self.enc(ann)  # [B, P, A]
            emb = self.emb(inputs)  # [B, T, E]
            outs, alphas = [], []
            for t in range(T):
                e = self.score(torch.tanh(enc + self.dec(h).unsqueeze(1))).squeeze(2)  # [B, P]
                alpha = torch.softmax(e, 1)
                z = torch.sigmoid(self.beta(h)) * (alpha.unsqueeze(2) * ann).sum(1)  # [B, C]
                h, c = self.cell(torch.cat([emb[:, t], z], 1), (h, c))
                outs.append(self.drop(torch.tanh(emb[:, t] + self.l_h(h) + self.l_z(z))))
                alphas.append(alpha)
            deep = torch.stack(outs, 1)  # [B, T, E]
            alpha = torch.stack(alphas, 1) * mask.unsqueeze(2)  # [B, T, P], real steps only
            reg = a.alpha_reg * ((1.0 - alpha.sum(1)) ** 2).sum() / B
            return self.out(deep[mask]), reg

    return Attention()


def sinusoids(rows, dim):
    """sinusoidalPositions of src/model/decoders/transformer.ts: PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos."""
    import numpy as np

    pe = np.zeros((rows, dim), dtype=np.float64)
    t = np.arange(rows, dtype=np.float64)[:, None]
    i = np.arange(0, dim, 2, dtype=np.float64)
    angle = t / np.power(10000.0, i / dim)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)[:, : dim // 2]
    return pe.astype(np.float32)


TRANSFORMER_MAX_LENGTH = 200  # token positions our transformer knows (its position table's rows)


def build_transformer(torch, a, vocab, shape, mean, std):
    """The pre-LN Transformer decoder as src/model/decoders/transformer.ts describes it (header comment).
    Initialised as ours (xavier-uniform kernels, the fused ones as their [D, D] parts; zero biases; LayerNorm
    1 / 0; embedding N(0, 1/D); learned position tables N(0, 1/2)); exact mode overwrites all of it."""
    from torch import nn

    P = int(math.prod(shape[:-1]))
    C = shape[-1]
    D, H, F, L = a.model_dim, a.heads, a.ffn_dim, a.layers
    K = D // H

    def linear(fan_in, fan_out, parts=1):
        d = nn.Linear(fan_in, fan_out)
        if a.init_scheme == "torch":  # nn.Linear's default, as ours: weight and bias uniform in +-1/sqrt(fan_in)
            return d
        bound = math.sqrt(6.0 / (fan_in + fan_out // parts))
        nn.init.uniform_(d.weight, -bound, bound)
        nn.init.zeros_(d.bias)
        return d

    def norm():
        return nn.LayerNorm(D, eps=1e-5)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_norm, self.qkv, self.self_out = norm(), linear(D, 3 * D, 3), linear(D, D)
            self.cross_norm, self.query, self.kv, self.cross_out = norm(), linear(D, D), linear(D, 2 * D, 2), linear(D, D)
            self.ffn_norm, self.hidden, self.out = norm(), linear(D, F), linear(F, D)

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("scale", torch.from_numpy(1.0 / std))
            self.emb = nn.Embedding(vocab, D)
            nn.init.normal_(self.emb.weight, 0.0, 1.0 / math.sqrt(D))
            if a.position_encoding == "learned":
                self.pos = nn.Parameter(torch.randn(TRANSFORMER_MAX_LENGTH, D) * math.sqrt(0.5))
            else:
                self.register_buffer("pos", torch.from_numpy(sinusoids(TRANSFORMER_MAX_LENGTH, D)))
            self.img = linear(C, D)
            self.img_pos = nn.Parameter(torch.randn(P, D) * math.sqrt(0.5)) if a.image_positions == "learned" else None
            self.img_norm = norm()
            self.blocks = nn.ModuleList([Block() for _ in range(L)])
            self.final_norm = norm()
            if a.tie_embeddings:
                self.out_bias = nn.Parameter(torch.zeros(vocab))
                if a.init_scheme == "torch":  # ours: as a Linear of fan-in D
                    nn.init.uniform_(self.out_bias, -1.0 / math.sqrt(D), 1.0 / math.sqrt(D))
            else:
                self.out = linear(D, vocab)
            self.drop = nn.Dropout(a.dropout)

        def forward(self, feats, inputs, mask):
            B, T = inputs.shape
            ann = (feats.view(B, P, C) - self.mean) * self.scale  # [B, P, C]
            m = self.img(ann)
            if self.img_pos is not None:
                m = m + self.img_pos
            m = self.drop(self.img_norm(m))  # [B, P, D]
            x = self.drop(self.emb(inputs) * math.sqrt(D) + self.pos[:T])  # [B, T, D]
            causal = torch.triu(torch.full((T, T), -1e9, dtype=x.dtype), 1)

            def heads(y, n, parts):  # [B, n, parts * D] -> parts x [B, H, n, K]
                return y.view(B, n, parts * H, K).transpose(1, 2).split(H, 1)

            def attend(q, k, v, bias=None):  # [B, H, Tq, K] x [B, H, Tk, K] -> [B, Tq, D]
                s = torch.matmul(q * (1.0 / math.sqrt(K)), k.transpose(2, 3))
                if bias is not None:
                    s = s + bias
                return torch.matmul(torch.softmax(s, -1), v).transpose(1, 2).reshape(B, q.shape[2], D)

            for blk in self.blocks:
                q, k, v = heads(blk.qkv(blk.self_norm(x)), T, 3)
                x = x + self.drop(blk.self_out(attend(q, k, v, causal)))
                (q,) = heads(blk.query(blk.cross_norm(x)), T, 1)
                k, v = heads(blk.kv(m), P, 2)
                x = x + self.drop(blk.cross_out(attend(q, k, v)))
                x = x + self.drop(blk.out(self.drop(torch.relu(blk.hidden(blk.ffn_norm(x))))))
            y = self.final_norm(x[mask])  # [M, D]
            if a.tie_embeddings:
                return torch.matmul(y, self.emb.weight.t()) + self.out_bias, None
            return self.out(y), None

    return Transformer()


# ------------------------------------------------------------------------------------------ exact mode


def read_our_weights(d):
    """A run folder's weights (src/model/runfolder.ts saveDecoder): weights.json, an index of tensors (name,
    shape, byte offset, length) and meta {type, spec}, over weights.bin, little-endian float32."""
    import numpy as np

    with open(os.path.join(d, "weights.json"), encoding="utf-8") as f:
        index = json.load(f)
    if index.get("format") != "captioner.weights":
        raise SystemExit(f"{d}/weights.json: not a captioner weights index")
    buf = np.fromfile(os.path.join(d, "weights.bin"), dtype="<f4")
    if buf.size * 4 != index["bytes"]:
        raise SystemExit(f"{d}/weights.bin: {buf.size * 4} bytes, the index says {index['bytes']}")
    out = {}
    for t in index["tensors"]:
        o = t["offset"] // 4
        out[t["name"]] = buf[o:o + t["length"]].reshape(t["shape"])
    return index.get("meta") or {}, out


def load_our_weights(torch, model, kind, w):
    """Copy our weights into the torch model. Ours are Keras layouts: kernels [in, out] (torch keeps
    [out, in]), LSTM kernels [in, 4U] with the gates i, f, g, o along 4U (torch's order too), one LSTM
    bias (torch's bias_ih; bias_hh stays 0). Every weight of ours must be used, every parameter set."""
    import numpy as np

    def k(name):  # a kernel, transposed to torch's [out, in]
        return np.ascontiguousarray(w[name].T)

    def v(name):
        return np.ascontiguousarray(w[name])

    if kind == "merge":
        lstm = model.lstm
        pairs = [
            (model.img.weight, k("image/kernel"), ["image/kernel"]), (model.img.bias, v("image/bias"), ["image/bias"]),
            (model.emb.weight, v("embedding"), ["embedding"]),
            (lstm.weight_ih_l0, k("lstm/kernel"), ["lstm/kernel"]), (lstm.weight_hh_l0, k("lstm/recurrent"), ["lstm/recurrent"]),
            (lstm.bias_ih_l0, v("lstm/bias"), ["lstm/bias"]), (lstm.bias_hh_l0, np.zeros_like(v("lstm/bias")), []),
            (model.hidden.weight, k("hidden/kernel"), ["hidden/kernel"]), (model.hidden.bias, v("hidden/bias"), ["hidden/bias"]),
            (model.out.weight, k("output/kernel"), ["output/kernel"]), (model.out.bias, v("output/bias"), ["output/bias"]),
        ]
    elif kind == "transformer":
        pairs = [(model.emb.weight, v("embedding"), ["embedding"])]
        if isinstance(model.pos, torch.nn.Parameter):
            pairs.append((model.pos, v("position"), ["position"]))
        pairs += [(model.img.weight, k("image/kernel"), ["image/kernel"]), (model.img.bias, v("image/bias"), ["image/bias"])]
        if model.img_pos is not None:
            pairs.append((model.img_pos, v("image/position"), ["image/position"]))
        pairs += [(model.img_norm.weight, v("image/norm/gamma"), ["image/norm/gamma"]), (model.img_norm.bias, v("image/norm/beta"), ["image/norm/beta"])]
        for i, blk in enumerate(model.blocks):
            for mod, name in ((blk.self_norm, "self/norm"), (blk.cross_norm, "cross/norm"), (blk.ffn_norm, "ffn/norm")):
                pairs += [(mod.weight, v(f"layer{i}/{name}/gamma"), [f"layer{i}/{name}/gamma"]), (mod.bias, v(f"layer{i}/{name}/beta"), [f"layer{i}/{name}/beta"])]
            for mod, name in ((blk.qkv, "self/qkv"), (blk.self_out, "self/output"), (blk.query, "cross/query"), (blk.kv, "cross/kv"),
                              (blk.cross_out, "cross/output"), (blk.hidden, "ffn/hidden"), (blk.out, "ffn/output")):
                pairs += [(mod.weight, k(f"layer{i}/{name}/kernel"), [f"layer{i}/{name}/kernel"]), (mod.bias, v(f"layer{i}/{name}/bias"), [f"layer{i}/{name}/bias"])]
        pairs += [(model.final_norm.weight, v("final/norm/gamma"), ["final/norm/gamma"]), (model.final_norm.bias, v("final/norm/beta"), ["final/norm/beta"])]
        if hasattr(model, "out_bias"):
            pairs.append((model.out_bias, v("output/bias"), ["output/bias"]))
        else:
            pairs += [(model.out.weight, k("output/kernel"), ["output/kernel"]), (model.out.bias, v("output/bias"), ["output/bias"])]
    else:
        cell = model.cell
        pairs = [
            (model.emb.weight, v("embedding"), ["embedding"]),
            (model.init_h.weight, k("init/h/kernel"), ["init/h/kernel"]), (model.init_h.bias, v("init/h/bias"), ["init/h/bias"]),
            (model.init_c.weight, k("init/c/kernel"), ["init/c/kernel"]), (model.init_c.bias, v("init/c/bias"), ["init/c/bias"]),
            (model.enc.weight, k("attention/encoder/kernel"), ["attention/encoder/kernel"]),
            (model.enc.bias, v("attention/encoder/bias"), ["attention/encoder/bias"]),
            (model.dec.weight, k("attention/decoder/kernel"), ["attention/decoder/kernel"]),
            (model.score.weight, k("attention/score/kernel"), ["attention/score/kernel"]),
            (model.beta.weight, k("gate/kernel"), ["gate/kernel"]), (model.beta.bias, v("gate/bias"), ["gate/bias"]),
            # the LSTM input is [E y; z]: our word kernel [E, 4U] over our context kernel [C, 4U]
            (cell.weight_ih, np.ascontiguousarray(np.concatenate([w["lstm/kernel"], w["lstm/context"]], 0).T), ["lstm/kernel", "lstm/context"]),
            (cell.weight_hh, k("lstm/recurrent"), ["lstm/recurrent"]),
            (cell.bias_ih, v("lstm/bias"), ["lstm/bias"]), (cell.bias_hh, np.zeros_like(v("lstm/bias")), []),
            (model.l_h.weight, k("deep/h/kernel"), ["deep/h/kernel"]),
            (model.l_z.weight, k("deep/z/kernel"), ["deep/z/kernel"]), (model.l_z.bias, v("deep/bias"), ["deep/bias"]),
            (model.out.weight, k("output/kernel"), ["output/kernel"]), (model.out.bias, v("output/bias"), ["output/bias"]),
        ]
    used = {n for _, _, names in pairs for n in names}
    unused = set(n for n in w if not n.startswith("norm/")) - used
    if unused:
        raise SystemExit(f"--init: weights the {kind} reference has no place for: {sorted(unused)}")
    params = {id(q) for q in model.parameters()}
    if params != {id(q) for q, _, _ in pairs}:
        raise SystemExit(f"--init: the {kind} reference has parameters our weights do not set")
    with torch.no_grad():
        for q, value, names in pairs:
            if tuple(q.shape) != value.shape:
                raise SystemExit(f"--init: {'+'.join(names) or 'bias_hh'} has shape {value.shape}, the torch parameter {tuple(q.shape)}")
            q.copy_(torch.from_numpy(value))


def read_order(path, train_ex, epochs):
    """The batches of every epoch as our trainer draws them: {"examples": [image of each training caption,
    in order], "epochs": [[[example index, ...] per batch] per epoch]}. Refused when it was computed for
    other training captions or does not cover every caption once per epoch."""
    with open(path, encoding="utf-8") as f:
        order = json.load(f)
    if order.get("examples") != [k for k, _ in train_ex]:
        raise SystemExit(f"{path}: the batch order was computed for other training captions")
    eps = order.get("epochs") or []
    if len(eps) < epochs:
        raise SystemExit(f"{path}: batches for {len(eps)} epochs, {epochs} asked for")
    for e, batches in enumerate(eps[:epochs], 1):
        if sorted(i for b in batches for i in b) != list(range(len(train_ex))):
            raise SystemExit(f"{path}: epoch {e} does not use every training caption exactly once")
    return eps


# ------------------------------------------------------------------------------------------ training


class OursAdam:
    """Adam as src/train/adam.ts (and Keras) writes it: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
    w -= lr_t m / (sqrt(v) + eps). torch.optim.Adam adds eps to the bias-corrected sqrt(v_hat) instead,
    i.e. ours behaves like torch's with eps / sqrt(1 - b2^t) (3.2e-6 at step 1, 1e-7 later)."""

    def __init__(self, torch, params, lr, eps, b1=0.9, b2=0.999):
        self.torch, self.params, self.lr, self.eps, self.b1, self.b2, self.t = torch, params, lr, eps, b1, b2, 0
        self.m = [torch.zeros_like(q) for q in params]
        self.v = [torch.zeros_like(q) for q in params]

    def zero_grad(self, set_to_none=True):
        for q in self.params:
            q.grad = None

    def step(self):
        self.t += 1
        lr_t = self.lr * math.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        with self.torch.no_grad():
            for q, m, v in zip(self.params, self.m, self.v):
                if q.grad is None:
                    continue
                m.mul_(self.b1).add_(q.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(q.grad, q.grad, value=1 - self.b2)
                q.sub_(lr_t * m / (v.sqrt() + self.eps))



def make_batch(torch, np, examples, feats):
    """makeBatch: inputs t[0..L-2] padded with 0 to the longest caption, targets t[1..] where non-zero."""
    T = max(2, max(len(t) for _, t in examples)) - 1
    inputs = np.zeros((len(examples), T), dtype=np.int64)
    targets = np.zeros((len(examples), T), dtype=np.int64)
    for b, (_, t) in enumerate(examples):
        inputs[b, :len(t) - 1] = t[:-1]
        targets[b, :len(t) - 1] = t[1:]
    x = torch.from_numpy(np.stack([feats[k] for k, _ in examples]))
    tg = torch.from_numpy(targets)
    mask = tg != 0
    return x, torch.from_numpy(inputs), mask, tg[mask]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepared", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--model", choices=["merge", "attention", "transformer"], default="merge")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=5.0, help="global gradient norm clip (0: none)")
    p.add_argument("--epsilon", type=float, default=1e-7, help="Adam epsilon (ours: 1e-7, Keras')")
    p.add_argument("--adam", choices=["torch", "ours"], default="torch",
                   help="torch: torch.optim.Adam + clip_grad_norm_ (the reference); ours: the update of "
                        "src/train/adam.ts (epsilon added to sqrt(v) before bias correction), to isolate a gap")
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--image-units", type=int, default=256)
    p.add_argument("--hidden-units", type=int, default=256)
    p.add_argument("--merge", choices=["add", "concat"], default="add")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--attention-dim", type=int, default=256)
    p.add_argument("--alpha-reg", type=float, default=1.0)
    p.add_argument("--layers", type=int, default=3, help="transformer: decoder blocks")
    p.add_argument("--heads", type=int, default=8, help="transformer: attention heads")
    p.add_argument("--model-dim", type=int, default=256, help="transformer: model size D")
    p.add_argument("--ffn-dim", type=int, default=1024, help="transformer: feed-forward width F")
    p.add_argument("--position-encoding", choices=["sinusoidal", "learned"], default="sinusoidal", help="transformer: word positions")
    p.add_argument("--image-positions", choices=["learned", "none"], default="learned", help="transformer: image position embeddings")
    p.add_argument("--tie-embeddings", choices=["true", "false"], default="true", help="transformer: output layer = embedding^T")
    p.add_argument("--init-scheme", choices=["keras", "torch"], default="keras",
                   help="model.init: how weights are drawn without --init (keras: the seed's defaults; torch: PyTorch's layer defaults)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="train.labelSmoothing (training loss only)")
    p.add_argument("--warmup-steps", type=int, default=0, help="train.warmupSteps: lr x min(1, step / W), step from 1")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="exact mode: start from these weights of ours (a run folder's last/ or best/)")
    p.add_argument("--order", help="exact mode: train on these batches (JSON: our trainer's order, per epoch)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--float64", action="store_true",
                   help="train in double precision: how far float32 rounding alone moves the losses (a diagnostic)")
    a = p.parse_args()

    try:
        import numpy as np
        import torch
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"PyTorch not available: {e}"}), flush=True)
        return 2
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)
    t0 = time.time()

    vocab, splits = read_prepared(a.prepared)
    train_ex = examples_of(splits["train"], a.limit)
    val_ex = examples_of(splits["val"])
    if not train_ex:
        print(json.dumps({"error": f"{a.prepared}: no training captions"}), flush=True)
        return 3
    train_keys = list(dict.fromkeys(k for k, _ in train_ex))  # unique, in first-seen order
    feats, shape = read_feature_cache(a.features, set(train_keys) | {k for k, _ in val_ex})
    a.tie_embeddings = a.tie_embeddings == "true"
    channels = shape[-1] if a.model in ("attention", "transformer") else int(np.prod(shape))
    mean, std = feature_norm(np.stack([feats[k] for k in train_keys]), channels)
    dim = int(np.prod(shape))
    if a.model == "merge":
        model = build_merge(torch, a, len(vocab), dim, mean, std)
    else:
        if len(shape) < 2:
            print(json.dumps({"error": f"{a.features}: {a.model} needs a grid cache, shape {shape}"}), flush=True)
            return 3
        build = build_attention if a.model == "attention" else build_transformer
        model = build(torch, a, len(vocab), shape, mean, std)
    norm_diff = None
    if a.init:
        meta, ours = read_our_weights(a.init)
        if meta.get("type", "merge") != a.model:
            raise SystemExit(f"{a.init}: holds a {meta.get('type', 'merge')} model, --model is {a.model}")
        load_our_weights(torch, model, a.model, ours)
        if "norm/mean" in ours:  # our feature standardisation against the one computed here (a diagnostic)
            norm_diff = max(float(np.abs(ours["norm/mean"] - mean).max()), float(np.abs(ours["norm/std"] - std).max()))
    order = read_order(a.order, train_ex, a.epochs) if a.order else None
    if a.float64:
        model.double()
        for k in feats:
            feats[k] = feats[k].astype(np.float64)
    params = [q for q in model.parameters() if q.requires_grad]
    if a.adam == "torch":
        opt = torch.optim.Adam(params, lr=a.lr, betas=(0.9, 0.999), eps=a.epsilon)
    else:
        opt = OursAdam(torch, params, a.lr, a.epsilon)
    ce_sum = torch.nn.CrossEntropyLoss(reduction="sum")
    ce_train = torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=a.label_smoothing)
    step = 0
    rng = np.random.default_rng(a.seed)

    def val_loss():
        model.eval()
        s, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(val_ex), max(a.batch, 64)):
                x, inp, mask, tg = make_batch(torch, np, val_ex[i:i + max(a.batch, 64)], feats)
                logits, _ = model(x, inp, mask)
                s += float(ce_sum(logits, tg))
                n += int(tg.numel())
        model.train()
        return s / n if n else float("nan")

    history = []
    for epoch in range(1, a.epochs + 1):
        if order:
            batches = order[epoch - 1]
        else:
            perm = rng.permutation(len(train_ex))
            batches = [perm[i:i + a.batch] for i in range(0, len(perm), a.batch)]
        loss_sum, ce_total, tokens = 0.0, 0.0, 0
        e0 = time.time()
        for ids in batches:
            batch = [train_ex[j] for j in ids]
            x, inp, mask, tg = make_batch(torch, np, batch, feats)
            logits, reg = model(x, inp, mask)
            ce = ce_train(logits, tg) / tg.numel()  # mean over the batch's real target tokens
            step += 1
            if a.warmup_steps > 0:
                lr = a.lr * min(1.0, step / a.warmup_steps)
                if a.adam == "torch":
                    for g in opt.param_groups:
                        g["lr"] = lr
                else:
                    opt.lr = lr
            loss = ce + reg if reg is not None else ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip > 0 and a.adam == "torch":
                torch.nn.utils.clip_grad_norm_(params, a.clip)
            elif a.clip > 0:  # src/train/adam.ts: scale = clip / max(norm, clip)
                with torch.no_grad():
                    norm = torch.sqrt(sum((q.grad * q.grad).sum() for q in params if q.grad is not None))
                    scale = a.clip / max(float(norm), a.clip)
                    for q in params:
                        if q.grad is not None:
                            q.grad.mul_(scale)
            opt.step()
            # ours records the minimised loss (regulariser included) as the training loss
            loss_sum += float(loss) * tg.numel()
            ce_total += float(ce) * tg.numel()
            tokens += int(tg.numel())
        rec = {"epoch": epoch, "trainLoss": loss_sum / max(1, tokens), "trainCrossEntropy": ce_total / max(1, tokens),
               "valLoss": val_loss(), "seconds": time.time() - e0}
        history.append(rec)
        print(json.dumps(rec), flush=True)
    print(json.dumps({
        "done": True, "peer": "pytorch-cpu", "torch": torch.__version__, "model": a.model,
        "trainCaptions": len(train_ex), "valCaptions": len(val_ex), "vocab": len(vocab), "shape": shape,
        "epochs": a.epochs, "finalValLoss": history[-1]["valLoss"], "finalTrainLoss": history[-1]["trainLoss"],
        "exact": bool(a.init and a.order), "normMaxAbsDiff": norm_diff,
        "seconds": time.time() - t0,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
