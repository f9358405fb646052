"""Train a sparse autoencoder on a model's residual stream with SAELens' trainer and save it in SAELens' format.

    python sae_multid_feature_discovery/train_sae.py                          # SmolLM2 layer 8, the local corpus
    python sae_multid_feature_discovery/train_sae.py --architecture topk --k 32 --expansion 16
    python sae_multid_feature_discovery/train_sae.py --model_name gpt2 --layer 7 --dataset monology/pile-uncopyrighted --max_tokens 2000000

The model runs once over the text up to the hook (contexts cut as generate_feature_occurence_data.py cuts
them: BOS + the first ctx_len - 1 tokens of each document); the residuals are cached under
<base_dir>/sae_training/. SAELens' SAETrainer then trains on shuffled batches of them (BOS positions left
out; the last --eval_contexts contexts held out), and the SAE is saved (cfg.json + sae_weights.safetensors,
loadable with SAE.load_from_disk and by every script here through --sae_path) with training_metrics.json:
L0, explained variance, dead-feature fraction and the CE loss recovered when the SAE is spliced in, all on
the held-out contexts. Without a text option the local English corpus (multid.sae.local_corpus) is built
and used. A second run with the same settings reuses the cache and the SAE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import add_base_dir_arg, add_device_arg, positive_int, resolve_base_dir, resolve_device
from multid.errors import cli_entry
from multid.models import MODEL_NAMES, lazy_loader
from multid.sae import paths
from multid.sae import train as T
from multid.sae.corpus import make_text_source


def build_parser() -> argparse.ArgumentParser:
    d = T.TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default="smollm2", choices=("gpt-2",) + MODEL_NAMES,
                        help="model (default: %(default)s)")
    parser.add_argument("--model_path", default=None, help="local weights folder for the model")
    parser.add_argument("--layer", type=int, default=8, help="layer whose resid_pre is read (default: %(default)s)")
    parser.add_argument("--hook", default=None, help="TransformerLens hook (default: blocks.<layer>.hook_resid_pre)")
    text = parser.add_argument_group("text (default: the local English corpus, built under <base_dir>/corpora)")
    text.add_argument("--dataset", default=None, help="Hugging Face dataset id, streamed (needs the hub)")
    text.add_argument("--dataset_path", default=None, help="a datasets folder written by save_to_disk")
    text.add_argument("--text_files", nargs="+", default=None, help=".txt / .jsonl files or folders of them")
    text.add_argument("--text_split", default="file", choices=("file", "paragraph", "line"),
                      help="with --text_files: one document per file, paragraph or line (default: %(default)s)")
    parser.add_argument("--ctx_len", type=positive_int, default=T.DEFAULT_CTX_LEN, help="tokens per context incl. BOS "
                                                                          "(default: %(default)s)")
    parser.add_argument("--max_tokens", type=positive_int, default=None, help="use at most this many tokens of text")
    parser.add_argument("--architecture", choices=T.ARCHITECTURES, default=d.architecture,
                        help="standard (ReLU + L1, as the paper's SAEs) or topk (default: %(default)s)")
    parser.add_argument("--expansion", type=positive_int, default=d.expansion,
                        help="d_sae / d_in (default: %(default)s)")
    parser.add_argument("--l1_coefficient", type=float, default=d.l1_coefficient,
                        help="standard: L1 coefficient on activations normalised to mean norm sqrt(d) "
                             "(default: %(default)s)")
    parser.add_argument("--k", type=positive_int, default=d.k, help="topk: active features per token "
                                                                    "(default: %(default)s)")
    parser.add_argument("--training_tokens", type=positive_int, default=d.training_tokens,
                        help="tokens seen in training; the cached positions are reshuffled each epoch "
                             "(default: %(default)s)")
    parser.add_argument("--batch_size", type=positive_int, default=d.batch_size,
                        help="positions per training step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--eval_contexts", type=positive_int, default=d.eval_contexts,
                        help="contexts held out for the metrics (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    parser.add_argument("--out", default=None, help="SAE folder (default: <base_dir>/saes/<model>_layer<L>/<tag>)")
    add_device_arg(parser, default="cpu")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    model = paths.canonical_model(args.model_name)
    base_dir = resolve_base_dir(args.base_dir)
    settings = T.TrainSettings(architecture=args.architecture, expansion=args.expansion,
                               l1_coefficient=args.l1_coefficient, k=args.k, training_tokens=args.training_tokens,
                               batch_size=args.batch_size, lr=args.lr, eval_contexts=args.eval_contexts, seed=args.seed)
    settings.check()
    out = Path(args.out).expanduser().resolve() if args.out else None
    if args.dataset or args.dataset_path or args.text_files:
        source = make_text_source(dataset=args.dataset, text_files=args.text_files, dataset_path=args.dataset_path,
                                  text_split=args.text_split)
    else:
        from multid.sae import local_corpus
        from multid.sae.text import load_tokenizer

        folder = local_corpus.local_corpus_stage(base_dir, tokenizer=load_tokenizer(model, base_dir=base_dir),
                                                 tokenizer_name=model)
        source = make_text_source(dataset_path=folder / "dataset")
        if args.max_tokens is None:  # the whole local corpus: no text suffix in the SAE's name (as make discover)
            out = out or T.sae_folder(base_dir, model, args.layer, settings, hook=args.hook, ctx_len=args.ctx_len)
    from multid.sae.occurrences import portable_model_fingerprint

    get_model = lazy_loader(model, device=resolve_device(args.device), model_path=args.model_path, base_dir=base_dir)
    command = "python sae_multid_feature_discovery/train_sae.py " + " ".join(sys.argv[1:] if argv is None else argv)
    max_contexts = None if args.max_tokens is None else max(1, args.max_tokens // args.ctx_len)
    print(f"text: {source.describe()}")
    path, _cache = T.train_sae_for_model(
        base_dir=base_dir, model_name=model, layer=args.layer, hook=args.hook, source=source, ctx_len=args.ctx_len,
        settings=settings, get_model=get_model, model_info=portable_model_fingerprint(model, args.model_path,
                                                                                      "float32"),
        max_contexts=max_contexts, out=out, command=command)
    metrics = T.read_metrics(path)
    print(f"SAE: {metrics['d_sae']} features on {metrics['hook']}, {metrics['training_tokens']:,} training tokens")
    print("  " + T.format_metrics(metrics))
    print("wrote:")
    print(f"  {path}  (use it with --sae_path)")
    print(f"  {path / T.METRICS_FILE}")
    return path


if __name__ == "__main__":
    main()
