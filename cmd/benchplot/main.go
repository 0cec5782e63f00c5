// Command benchplot draws chatbench results as a latency-versus-throughput
// chart: x is deliveries per second, y is p50 and p99 latency in
// milliseconds, one pair of lines per series.
//
//	go run ./cmd/benchplot -o docs/latency-throughput-1node.png results/1node-*.json
//
// Arguments are chatbench -json result files or directories of them
// (*.json). A result's series is its "label" (chatbench -label), or else its
// file name without the extension and without a last "-" part that holds a
// digit: 1node-ws-r500.json and 1node-ws-r1000.json both go to "1node-ws".
// -label names one series for every file given. Results of -idle runs are
// skipped.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// point is one chatbench result: the fields the chart needs.
type point struct {
	Mode      string  `json:"mode"`
	Label     string  `json:"label"`
	PerSec    float64 `json:"deliveries_per_s"`
	LatencyMS struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
	Lost int64 `json:"lost"`
	file string
}

// series is the points of one name, sorted by throughput.
type series struct {
	name   string
	points []point
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: benchplot [flags] result.json|dir ...\n\nDraws chatbench -json results as latency (p50, p99) versus deliveries/s.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	out := fs.String("o", "latency-throughput.png", "output file (.png, .svg or .pdf)")
	title := fs.String("title", "Latency vs throughput", "chart title")
	label := fs.String("label", "", "one series name for every result given (default: each result's label, or its file name)")
	logY := fs.Bool("logy", false, "logarithmic latency axis")
	width := fs.Float64("width", 20, "width in cm")
	height := fs.Float64("height", 12, "height in cm")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("benchplot: no result files given")
	}
	files, err := expand(fs.Args())
	if err != nil {
		return err
	}
	ss, err := load(files, *label, stderr)
	if err != nil {
		return err
	}
	p, err := chart(ss, *title, *logY)
	if err != nil {
		return err
	}
	if err := p.Save(vg.Length(*width)*vg.Centimeter, vg.Length(*height)*vg.Centimeter, *out); err != nil {
		return fmt.Errorf("benchplot: save %s: %w", *out, err)
	}
	n := 0
	for _, s := range ss {
		n += len(s.points)
	}
	fmt.Fprintf(stdout, "wrote %s: %d series, %d results\n", *out, len(ss), n)
	return nil
}

// expand replaces directories by the .json files in them.
func expand(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("benchplot: %w", err)
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		m, err := filepath.Glob(filepath.Join(a, "*.json"))
		if err != nil {
			return nil, fmt.Errorf("benchplot: %w", err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		return nil, errors.New("benchplot: no .json files found")
	}
	return files, nil
}

// load reads the results and groups them into series, in order of first
// appearance.
func load(files []string, label string, stderr io.Writer) ([]series, error) {
	var ss []series
	index := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("benchplot: %w", err)
		}
		var pt point
		if err := json.Unmarshal(b, &pt); err != nil {
			return nil, fmt.Errorf("benchplot: %s: %w", f, err)
		}
		pt.file = f
		if pt.Mode != "" && pt.Mode != "load" {
			fmt.Fprintf(stderr, "benchplot: skipping %s: a %s result\n", f, pt.Mode)
			continue
		}
		if pt.PerSec <= 0 {
			fmt.Fprintf(stderr, "benchplot: skipping %s: no deliveries\n", f)
			continue
		}
		if pt.Lost != 0 {
			fmt.Fprintf(stderr, "benchplot: warning: %s lost %d deliveries\n", f, pt.Lost)
		}
		name := seriesName(label, pt.Label, f)
		i, ok := index[name]
		if !ok {
			i = len(ss)
			index[name] = i
			ss = append(ss, series{name: name})
		}
		ss[i].points = append(ss[i].points, pt)
	}
	if len(ss) == 0 {
		return nil, errors.New("benchplot: no load results to plot")
	}
	for _, s := range ss {
		sort.SliceStable(s.points, func(a, b int) bool { return s.points[a].PerSec < s.points[b].PerSec })
	}
	return ss, nil
}

// seriesName picks a result's series: the -label flag, the result's label,
// or its file name less the extension and a last "-" part with a digit.
func seriesName(flagLabel, resultLabel, file string) string {
	if flagLabel != "" {
		return flagLabel
	}
	if resultLabel != "" {
		return resultLabel
	}
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	if i := strings.LastIndexByte(base, '-'); i > 0 && strings.ContainsAny(base[i+1:], "0123456789") {
		return base[:i]
	}
	return base
}

// chart draws the series: p50 solid with circles, p99 dashed with
// triangles, one color per series.
func chart(ss []series, title string, logY bool) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "deliveries/s"
	p.Y.Label.Text = "latency (ms)"
	p.X.Tick.Marker = siTicks{}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	for i, s := range ss {
		c := plotutil.Color(i)
		for _, q := range []struct {
			name   string
			val    func(point) float64
			dashes []vg.Length
			glyph  draw.GlyphDrawer
		}{
			{"p50", func(pt point) float64 { return pt.LatencyMS.P50 }, nil, draw.CircleGlyph{}},
			{"p99", func(pt point) float64 { return pt.LatencyMS.P99 }, []vg.Length{vg.Points(6), vg.Points(3)}, draw.TriangleGlyph{}},
		} {
			xys := make(plotter.XYs, 0, len(s.points))
			for _, pt := range s.points {
				y := q.val(pt)
				if logY && y <= 0 {
					continue
				}
				xys = append(xys, plotter.XY{X: pt.PerSec, Y: y})
			}
			if len(xys) == 0 {
				continue
			}
			l, sc, err := plotter.NewLinePoints(xys)
			if err != nil {
				return nil, fmt.Errorf("benchplot: series %s: %w", s.name, err)
			}
			l.Color, l.Dashes, l.Width = c, q.dashes, vg.Points(1.5)
			sc.Color, sc.Shape, sc.Radius = c, q.glyph, vg.Points(3)
			p.Add(l, sc)
			p.Legend.Add(s.name+" "+q.name, l, sc)
		}
	}
	p.X.Min = 0
	if !logY {
		p.Y.Min = 0
	}
	return p, nil
}

// siTicks labels the default ticks with k and M.
type siTicks struct{}

func (siTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = si(ts[i].Value)
		}
	}
	return ts
}

func si(v float64) string {
	f := func(x float64, unit string) string { return strconv.FormatFloat(x, 'f', -1, 64) + unit }
	switch a := math.Abs(v); {
	case a >= 1e6:
		return f(math.Round(v/1e4)/100, "M")
	case a >= 1e3:
		return f(math.Round(v/10)/100, "k")
	}
	return f(v, "")
}
