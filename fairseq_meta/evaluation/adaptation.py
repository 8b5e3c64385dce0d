"""Adapting to a new domain: masked-LM loss on held-out text of a domain the
checkpoint was not pre-trained on, after t adaptation steps on that domain.

The paper's "learning to learn", read literally: a better initialisation is one
that a few gradient steps on a new domain improve most. For every checkpoint
alike:

* text: a training file and an evaluation file of the domain, encoded with the
  checkpoint's sentencepiece model and dictionary, cut into blocks of
  ``max_positions - 1`` tokens, or ``--ad-block-tokens``, with ``<s>`` in front
  (``masked_lm`` with ``--sample-break-mode none``);
* evaluation set: the first ``eval_blocks`` blocks of the evaluation file, with
  one fixed masking (``mask_seed``), the same for every checkpoint and seed;
* masking: BERT's (15% of the tokens after ``<s>``; of those 80% ``<mask>``,
  10% a random token, 10% unchanged);
* adaptation: Adam (betas 0.9/0.98, eps 1e-6, no weight decay, constant lr),
  ``batch_size`` blocks per step drawn with the seed, freshly masked, dropout on
  (as in pre-training); the loss is the mean cross-entropy over the batch's
  masked tokens, as fairseq's ``masked_lm``;
* the number reported is the evaluation loss in bits per masked token (dropout
  off) after t in ``steps`` adaptation steps; t = 0 is the checkpoint itself.

The seed draws the batches, their masks and dropout; seed s is the same for
every checkpoint, so differences between checkpoints are paired.
"""
import math

import numpy as np

from .model import device_of

STEPS = (0, 1, 4, 16, 64)


def mask_blocks(blocks, rng, dictionary, mask_prob=0.15, random_prob=0.1, keep_prob=0.1):
    """(inputs, mask) for ``blocks`` [n, L] (``<s>`` prepended here): BERT masking
    drawn from the numpy RandomState ``rng``. Position 0 (``<s>``) is never masked."""
    n, length = blocks.shape
    tokens = np.concatenate([np.full((n, 1), dictionary.bos(), dtype=np.int64), blocks], axis=1)
    mask = rng.rand(n, length + 1) < mask_prob
    mask[:, 0] = False
    mask &= tokens != dictionary.pad()
    u = rng.rand(n, length + 1)
    random_tokens = rng.randint(dictionary.nspecial, len(dictionary) - 1, size=(n, length + 1))
    inputs = tokens.copy()
    use_mask = mask & (u < 1 - random_prob - keep_prob)
    use_random = mask & (u >= 1 - random_prob - keep_prob) & (u < 1 - keep_prob)
    inputs[use_mask] = dictionary.index("<mask>")
    inputs[use_random] = random_tokens[use_random]
    return tokens, inputs, mask


def mlm_loss_sum(model, targets, inputs, mask):
    """(summed cross-entropy in nats over the masked tokens, their count) of a batch,
    on the model's device."""
    import torch
    import torch.nn.functional as F

    device = device_of(model)
    targets, inputs, mask = (torch.as_tensor(a, device=device) for a in (targets, inputs, mask))
    if not mask.any():
        return torch.zeros((), device=device), 0
    logits = model(inputs, masked_tokens=mask)[0]
    loss = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
    return loss, int(mask.sum())


def evaluate(model, eval_set, batch_size=32):
    """Bits per masked token of ``model`` (eval mode) on the fixed evaluation set."""
    import torch

    targets, inputs, mask = eval_set
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            sl = slice(start, start + batch_size)
            loss, n = mlm_loss_sum(model, targets[sl], inputs[sl], mask[sl])
            total += float(loss)
            count += n
    model.train(was_training)
    return total / count / math.log(2)


def make_eval_set(blocks, dictionary, eval_blocks, mask_seed=0):
    blocks = blocks[:eval_blocks]
    return mask_blocks(blocks, np.random.RandomState(mask_seed), dictionary)


def adapt(model, dictionary, train_blocks, eval_set, seed, *, steps=STEPS, lr=5e-4, batch_size=16):
    """{t: bits} for t in ``steps``: the evaluation loss after t adaptation steps
    (see the module docstring). ``model`` is changed in place."""
    import torch

    steps = sorted(set(int(t) for t in steps))
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                                 weight_decay=0.0)
    out = {}
    done = 0
    for t in steps:
        model.train()
        while done < t:
            idx = rng.choice(len(train_blocks), size=min(batch_size, len(train_blocks)), replace=False)
            targets, inputs, mask = mask_blocks(train_blocks[idx], rng, dictionary)
            loss, n = mlm_loss_sum(model, targets, inputs, mask)
            optimizer.zero_grad()
            if n:
                (loss / n).backward()
                optimizer.step()
            done += 1
        out[t] = evaluate(model, eval_set)
    return out
