"""edgefit.units parsers and edgefit.report.quantities formatters: sizes, durations, power, counts."""

from __future__ import annotations

import pytest

from edgefit import ConfigError
from edgefit.report.quantities import format_bytes, format_count
from edgefit.units import parse_duration_s, parse_power_w, parse_size


@pytest.mark.parametrize("text, expected", [
    ("512KB", 512_000),                  # KB = 1000
    ("520 KiB", 532_480),                # 520 * 1024
    ("4MB", 4_000_000),
    ("1.5GiB", 1_610_612_736),           # 1.5 * 1024**3
    ("2 mib", 2_097_152),                # case-insensitive
    ("100", 100), ("100B", 100), (" 7 b ", 7),
    ("1e3KB", 1_000_000),
    (1024, 1024), (2.0, 2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "12 XB", "-5KB", "1,5MB", "5 K B", "1e999KB", "nan", True, -1,
                                  float("inf"), float("nan")])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError):
        parse_size(text)


@pytest.mark.parametrize("text, expected", [
    ("20ms", 0.020), ("1.5s", 1.5), ("200us", 200e-6), ("200µs", 200e-6), ("5", 0.005),   # bare number: ms
    ("2min", 120.0), ("10ns", 10e-9),
])
def test_parse_duration(text, expected):
    assert parse_duration_s(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("50mW", 0.05), ("2.5W", 2.5), ("300uW", 300e-6), ("3", 3.0), ("6.5kW", 6500.0),
])
def test_parse_power(text, expected):
    assert parse_power_w(text) == pytest.approx(expected)


@pytest.mark.parametrize("parse", [parse_duration_s, parse_power_w])
@pytest.mark.parametrize("text", ["fast", "10 parsecs", "-1s", "1e999", True])
def test_parse_duration_and_power_reject(parse, text):
    with pytest.raises(ConfigError):
        parse(text)


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"), (5 * 1024**2, "5.00 MiB"),
    (1024**4, "1.00 TiB"), (1024**5, "1024.00 TiB"), (None, "unknown"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("n, text", [
    (0, "0"), (999, "999"), (1000, "1.00 K"), (1_234_000, "1.23 M"), (2.16e12, "2.16 T"), (5e15, "5000.00 T"),
    (None, "unknown"),
])
def test_format_count(n, text):
    assert format_count(n) == text
