package main

import "testing"

// TestParseLagSetup: -proxies-lag entries are N or N:first, N from 1 to lagConns.
func TestParseLagSetup(t *testing.T) {
	for _, c := range []struct {
		in   string
		want lagSetup
		ok   bool
	}{
		{"1", lagSetup{n: 1}, true},
		{"3:first", lagSetup{n: 3, first: true}, true},
		{"48", lagSetup{n: 48}, true},
		{"0", lagSetup{}, false},
		{"49", lagSetup{}, false},
		{"3:last", lagSetup{}, false},
		{"x", lagSetup{}, false},
	} {
		got, err := parseLagSetup(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseLagSetup(%q) = %+v, %v; want %+v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && got.String() != c.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), c.in)
		}
	}
}
