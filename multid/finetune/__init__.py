"""Teaching a small model the paper's modular arithmetic, offline, so Figure 5 can be tested on a CPU.

`data` makes training prompts in phrasings other than the paper's (section 5.1) and checks that none
of them is, or starts like, a paper prompt; `train` fine-tunes a LoRA (PEFT) on the answer token,
merges it and saves a plain Hugging Face folder under the models dir, which `multid.models` loads
under a registered name (`smollm2-arith`; `tiny-arith` for tests). docs/finetune.md has the recipe.
"""
