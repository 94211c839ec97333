"""Model bundles: tiny models, padding that never hides prompt tokens, reward heads, LoRA."""

import pytest
import torch

from rlhf_lab import Policy, RewardModel, load_reward_model, tiny_model
from rlhf_lab.models import as_policy, load_policy
from rlhf_lab.models.chat import render_prompts, tokenize_prompts
from rlhf_lab.models.lora import bnb_config

PROMPTS = [
    "Hi",
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name three rivers in Europe."},
        {"role": "assistant", "content": "Danube, Rhine, Loire."},
        {"role": "user", "content": "And one in Asia?"},
    ],
    "Write a haiku about autumn leaves falling slowly onto a quiet pond.",
]


class TestTinyModel:
    def test_architecture_and_bundle(self, tiny_policy):
        cfg = tiny_policy.model.config
        assert isinstance(tiny_policy, Policy)
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.model_type) == (64, 2, "llama")
        assert cfg.vocab_size == len(tiny_policy.tokenizer)

    def test_same_seed_same_weights_and_global_rng_untouched(self):
        torch.manual_seed(123)
        expected_next = torch.rand(1)
        torch.manual_seed(123)
        a, b, c = tiny_model(seed=0), tiny_model(seed=0), tiny_model(seed=1)
        assert torch.rand(1) == expected_next  # building models did not consume the global RNG
        for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
            assert torch.equal(pa, pb), name
        assert not torch.equal(a.model.model.embed_tokens.weight, c.model.model.embed_tokens.weight)

    def test_reward_kind_has_scalar_head(self, tiny_reward):
        assert isinstance(tiny_reward, RewardModel)
        assert tiny_reward.model.config.num_labels == 1
        scores = tiny_reward.score(["Hi", "Hello there"], ["Hello!", "General Kenobi."])
        assert len(scores) == 2 and all(isinstance(s, float) for s in scores)

    def test_bad_kind(self):
        with pytest.raises(ValueError, match="'causal' or 'reward'"):
            tiny_model("vision")


class TestPadding:
    def test_pad_token_is_distinct_from_eos_and_is_endoftext(self, tiny_policy):
        tok = tiny_policy.tokenizer
        assert tok.pad_token == "<|endoftext|>"
        assert tok.pad_token_id != tok.eos_token_id
        assert tok.eos_token == "<|im_end|>"
        assert tok.padding_side == "left"

    def test_prompt_tokens_are_never_masked_out(self, tiny_policy):
        tok = tiny_policy.tokenizer
        batch = tokenize_prompts(tok, PROMPTS)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        # the chat template closes every turn with <|im_end|> (= EOS) inside the prompt ...
        assert (ids == tok.eos_token_id).sum() >= 5
        # ... and a mask built as `ids != pad_id` must agree with the tokenizer's own mask
        assert torch.equal((ids != tok.pad_token_id).long(), mask)
        # each row's unpadded tokens are exactly its templated prompt, left-padded
        for row, text in zip(range(len(PROMPTS)), render_prompts(tok, PROMPTS)):
            expected = tok(text, add_special_tokens=False)["input_ids"]
            assert ids[row, mask[row].bool()].tolist() == expected
            assert mask[row, -1] == 1  # padding is on the left
        # the failure this guards against: with pad == EOS the same mask would drop prompt tokens
        assert ((ids != tok.eos_token_id) & mask.bool()).sum() < mask.sum()

    def test_template_adds_no_second_bos(self, tiny_policy):
        tok = tiny_policy.tokenizer
        ids = tokenize_prompts(tok, ["Hi"])["input_ids"][0].tolist()
        assert ids.count(tok.bos_token_id) == ids.count(tok.convert_tokens_to_ids("<|im_start|>"))
        assert "<|im_start|>assistant\n" in render_prompts(tok, ["Hi"])[0]


class TestGenerate:
    def test_batched_generation_matches_one_by_one(self, tiny_policy):
        batched = tiny_policy.generate(PROMPTS, max_new_tokens=6)
        single = [tiny_policy.chat(p, max_new_tokens=6) for p in PROMPTS]
        assert batched == single
        assert len(batched) == 3 and all(isinstance(t, str) for t in batched)

    def test_sampling_is_seeded(self, tiny_policy):
        a = tiny_policy.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=7)
        b = tiny_policy.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=7)
        assert a == b

    def test_stop_strings_cut_the_text(self, tiny_policy):
        full = tiny_policy.chat("Hi", max_new_tokens=12, temperature=1.0, seed=3)
        assert len(full) > 2
        cut = tiny_policy.chat("Hi", max_new_tokens=12, temperature=1.0, seed=3, stop=[full[2:4]])
        assert full.startswith(cut) and len(cut) <= 2

    def test_save_writes_safetensors_and_reloads_identically(self, tiny_policy, tmp_path):
        tiny_policy.save(tmp_path / "ckpt")
        assert (tmp_path / "ckpt" / "model.safetensors").exists()
        assert not list((tmp_path / "ckpt").glob("*.bin"))
        again = load_policy(tmp_path / "ckpt")
        assert again.tokenizer.pad_token == "<|endoftext|>"
        assert again.generate(PROMPTS, max_new_tokens=6) == tiny_policy.generate(PROMPTS, max_new_tokens=6)


class TestRewardModel:
    def test_head_on_a_policy_copies_the_trunk(self, tiny_policy):
        rm = load_reward_model(tiny_policy)
        assert rm.model.config.num_labels == 1
        assert torch.equal(rm.model.model.embed_tokens.weight, tiny_policy.model.model.embed_tokens.weight)
        assert rm.model.model.embed_tokens.weight.data_ptr() != tiny_policy.model.model.embed_tokens.weight.data_ptr()

    def test_scores_do_not_depend_on_batch_padding(self, tiny_reward):
        prompts = ["Hi", "Tell me about the history of the Roman empire in detail, please."]
        completions = ["Hello.", "It lasted a long time."]
        batched = tiny_reward.score(prompts, completions, batch_size=2)
        single = [tiny_reward.score([p], [c])[0] for p, c in zip(prompts, completions)]
        assert batched == pytest.approx(single, abs=1e-5)

    def test_length_mismatch_is_an_error(self, tiny_reward):
        with pytest.raises(ValueError, match="2 prompts but 1 completions"):
            tiny_reward.score(["a", "b"], ["c"])

    def test_minilm_encoder_backbone(self):
        rm = load_reward_model("all-minilm-l6-v2")
        assert rm.model.config.model_type == "bert" and rm.model.config.num_labels == 1
        s = rm.score(["What is 2+2?", "What is 2+2?"], ["4", "The moon is made of cheese."])
        assert len(s) == 2 and s[0] != s[1]


class TestLoraAndQlora:
    def test_lora_only_adapters_train(self, tmp_path):
        tiny_model().save(tmp_path / "base")
        policy = load_policy(tmp_path / "base", lora={"r": 4})
        trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        policy.save(tmp_path / "adapter")
        assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
        assert not (tmp_path / "adapter" / "model.safetensors").exists()

    def test_bad_lora_spec(self, tiny_policy, tmp_path):
        tiny_policy.save(tmp_path / "base")
        with pytest.raises(TypeError, match="lora must be True, a rank"):
            load_policy(tmp_path / "base", lora="big")

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
    def test_qlora_without_cuda_is_a_clear_error(self):
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            bnb_config("4bit", "cpu")


class TestResolve:
    def test_as_policy_accepts_bundles_and_run_like_objects(self, tiny_policy):
        assert as_policy(tiny_policy) is tiny_policy

        class Run:  # anything with .model and .tokenizer, like a finished stage's result
            model, tokenizer = tiny_policy.model, tiny_policy.tokenizer

        wrapped = as_policy(Run())
        assert isinstance(wrapped, Policy) and wrapped.model is tiny_policy.model

    def test_bad_dtype(self, tmp_path, tiny_policy):
        tiny_policy.save(tmp_path / "m")
        with pytest.raises(ValueError, match="unknown dtype 'float13'"):
            load_policy(tmp_path / "m", dtype="float13")
