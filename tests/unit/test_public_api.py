import appd


def test_all_is_sorted_and_complete() -> None:
    assert appd.__all__ == sorted(appd.__all__)
    for name in appd.__all__:
        assert hasattr(appd, name), name


def test_version_comes_from_installed_metadata() -> None:
    assert appd.__version__
