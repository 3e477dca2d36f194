"""A recipe value of the wrong type is refused in one line that names the file and the option (TOML and dicts can
hold anything; an int is no bool, a float may be an int)."""

from __future__ import annotations

import pytest

from edgeq.errors import RecipeError
from edgeq.quantization.recipe import Recipe, load_recipe


@pytest.mark.parametrize(
    "line, message",
    [
        ('percentile = "high"', "percentile must be a number, not 'high'"),
        ("dyadic_bits = 3.5", "dyadic_bits must be an integer, not 3.5"),
        ('pow2 = "yes"', "pow2 must be true or false, not 'yes'"),
        ("max_calib_samples = true", "max_calib_samples must be an integer, not True"),
        ("weight_bits = [8]", "weight_bits must be an integer, not [8]"),
        ("per_channel = 1", "per_channel must be true or false, not 1"),
        ("cpu = 5", "cpu must be a string, not 5"),
        ('passes = "equalize"', "passes must be a list of names, not 'equalize'"),
        ("input_shapes = [1, 2]", "input_shapes must map input names to shapes, not [1, 2]"),
    ],
)
def test_wrong_types_name_the_file_and_the_option(tmp_path, line, message):
    path = tmp_path / "recipe.toml"
    path.write_text(line + "\n")
    with pytest.raises(RecipeError) as refusal:
        load_recipe(path)
    assert str(refusal.value) == f"recipe file {path}: {message}"


def test_right_types_pass_and_an_integer_is_a_number():
    recipe = Recipe(percentile=99, max_calib_samples=None, pow2=False).validate()
    assert recipe.percentile == 99 and recipe.max_calib_samples is None
