"""plan_epochs: the batches and padding of every epoch of a fine-tuning run, without a model."""

import pytest

from tdnotebooks.finetuning.padding_plan import EpochPlan, plan_epochs
from tdnotebooks.finetuning.planning import BucketSpec, epoch_batches
from tdnotebooks.finetuning.train import FinetuneConfig, make_batching
from tdnotebooks.padding import padding_stats


@pytest.fixture(scope="module")
def train(wordpiece):
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    return prepare(load_task("rt_sentiment")["train"].shuffle(seed=0).select(range(200)), wordpiece, max_length=64)


def config(**overrides) -> FinetuneConfig:
    return FinetuneConfig(**{"epochs": 3, "base_batch_size": 8, "token_budget": 512, "progress": False, **overrides})


def test_bucket_plans_are_the_pure_epoch_plan_padded_to_each_batchs_longest(train, wordpiece):
    plans = plan_epochs(config(method="bucket", seed=3), train, wordpiece.pad_token_id)
    spec = BucketSpec(train["length"], token_budget=512, base_batch_size=8)
    assert len(plans) == 3 and all(isinstance(p, EpochPlan) for p in plans)
    for epoch, (batches, padding) in enumerate(plans):
        assert batches == epoch_batches(spec, seed=3, epoch=epoch)
        assert padding == padding_stats(train["length"], batches)  # PadToBatchMax counts what it pads


@pytest.mark.parametrize("method", ["random", "group_by_length", "bucket", "tokendrop_bucket"])
def test_plans_follow_the_batch_sampler_and_repeat_for_the_same_config(train, wordpiece, method):
    plans = plan_epochs(config(method=method), train, wordpiece.pad_token_id, epochs=2)
    batching = make_batching(config(method=method), train, wordpiece.pad_token_id)
    for epoch, (batches, padding) in enumerate(plans):
        batching.set_epoch(epoch)
        assert batches == [list(b) for b in batching.batch_sampler]
        assert sorted(i for b in batches for i in b) == list(range(len(train)))
        assert padding.num_batches == len(batches) and padding.real_tokens <= sum(train["length"])
        if method != "tokendrop_bucket":  # TokenDrop drops stopwords: fewer real tokens
            assert padding.real_tokens == sum(train["length"])
    assert plan_epochs(config(method=method), train, wordpiece.pad_token_id, epochs=2) == plans


def test_tokendrop_bucket_plans_pad_less_than_bucket_alone(train, wordpiece):
    bucket = plan_epochs(config(method="bucket"), train, wordpiece.pad_token_id)
    dropped = plan_epochs(config(method="tokendrop_bucket"), train, wordpiece.pad_token_id)
    for (_, plain), (_, td) in zip(bucket, dropped, strict=True):
        assert td.pad_tokens <= plain.pad_tokens and td.real_tokens < plain.real_tokens


def test_bad_arguments(train, wordpiece):
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        plan_epochs(config(), train, wordpiece.pad_token_id, epochs=0)
    with pytest.raises(ValueError, match="pad_token_id must be an int >= 0"):
        plan_epochs(config(), train, -1)
