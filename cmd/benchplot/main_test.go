package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeriesName(t *testing.T) {
	for _, c := range []struct{ flag, label, file, want string }{
		{"", "", "results/1node-ws-r500.json", "1node-ws"},
		{"", "", "1node-ws-100k.json", "1node-ws"},
		{"", "", "results/ws.json", "ws"},
		{"", "", "a-b.json", "a-b"},
		{"", "grpc 3 nodes", "results/x-1.json", "grpc 3 nodes"},
		{"all", "grpc", "results/x-1.json", "all"},
	} {
		if got := seriesName(c.flag, c.label, c.file); got != c.want {
			t.Errorf("seriesName(%q, %q, %q) = %q, want %q", c.flag, c.label, c.file, got, c.want)
		}
	}
}

func writeResult(t *testing.T, dir, name, label string, perSec, p50, p99 float64) {
	t.Helper()
	b := fmt.Sprintf(`{"mode":"load","label":%q,"deliveries_per_s":%g,"latency_ms":{"p50":%g,"p99":%g},"lost":0}`, label, perSec, p50, p99)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPlot(t *testing.T) {
	dir := t.TempDir()
	for i, r := range []float64{100e3, 400e3, 200e3, 800e3} {
		writeResult(t, dir, fmt.Sprintf("1node-ws-%d.json", i), "", r, 0.5+r/1e6, 2+r/1e5)
		writeResult(t, dir, fmt.Sprintf("1node-grpc-%d.json", i), "", r*0.8, 0.7+r/1e6, 3+r/1e5)
	}
	if err := os.WriteFile(filepath.Join(dir, "idle-1.json"), []byte(`{"mode":"idle","connected":10}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, logy := range []string{"-logy=false", "-logy=true"} {
		out := filepath.Join(t.TempDir(), "chart.png")
		var stdout, stderr bytes.Buffer
		if err := run([]string{"-o", out, logy, dir}, &stdout, &stderr); err != nil {
			t.Fatalf("run: %v (%s)", err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "2 series, 8 results") || !strings.Contains(stderr.String(), "skipping") {
			t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width < 300 || cfg.Height < 200 {
			t.Errorf("png: %+v, %v", cfg, err)
		}
	}
}

func TestPlotErrors(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(nil, &out, &out); err == nil {
		t.Error("no arguments: no error")
	}
	if err := run([]string{dir}, &out, &out); err == nil {
		t.Error("empty directory: no error")
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o644)
	if err := run([]string{"-o", filepath.Join(dir, "x.png"), bad}, &out, &out); err == nil {
		t.Error("bad JSON: no error")
	}
}
