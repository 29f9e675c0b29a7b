from genai.video import probe


def test_fixture_clips_are_what_the_tests_need(bunny_short, vfr_clip, ramp_10bit):
    b = probe(bunny_short)
    assert (b.width, b.height, b.frames) == (96, 54, 25) and len(b.keyframes) >= 4
    assert [s.codec for s in b.others] == ["aac"]
    v = probe(vfr_clip)
    assert v.frames == 24 and v.rate is not None
    r = probe(ramp_10bit)
    assert r.bit_depth == 10 and r.colour.matrix == "itu709" and not r.colour.full_range and not r.colour.assumed
