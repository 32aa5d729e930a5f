package matrix

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Markdown writes the table a person reads.
func (r Report) Markdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| A | B | expected | direct | relay | failed | first byte p50 (ms) | to direct p50 (ms) | met |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, p := range r.Pairs {
		met := "yes"
		if !p.Met() {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d/%d | %d | %d | %s | %s | %s |\n",
			p.A, p.B, p.Expected, p.Direct, p.Trials, p.Relay, p.Failed, fmtMs(p.FirstByteMsP50), fmtMs(p.DirectMsP50), met)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtMs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", *v)
}

// JSON writes matrix.json.
func (r Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// grid is the heat map's data: direct-connection rate by pair, rows A,
// columns B; NaN where a pair was not run.
type grid struct {
	types []string
	rate  [][]float64
}

func (g grid) Dims() (c, r int)   { return len(g.types), len(g.types) }
func (g grid) Z(c, r int) float64 { return g.rate[r][c] }
func (g grid) X(c int) float64    { return float64(c) }
func (g grid) Y(r int) float64    { return float64(r) }

// SVG draws the heat map of direct-connection rate by pair (same-nat, a
// scenario of its own, is written in the title).
func (r Report) SVG(w io.Writer) error {
	var types []string
	seen := map[string]bool{}
	for _, t := range PairTypes {
		for _, p := range r.Pairs {
			if (p.A == t || p.B == t) && !seen[t] && p.A != SameNAT {
				seen[t] = true
				types = append(types, t)
			}
		}
	}
	if len(types) == 0 {
		return fmt.Errorf("no pairs to draw")
	}
	idx := map[string]int{}
	for i, t := range types {
		idx[t] = i
	}
	g := grid{types: types, rate: make([][]float64, len(types))}
	nan := func() float64 { var z float64; return z / z }
	for i := range g.rate {
		g.rate[i] = make([]float64, len(types))
		for j := range g.rate[i] {
			g.rate[i][j] = nan()
		}
	}
	title := "direct-connection rate by NAT pair (rows: A, columns: B)"
	var labels plotter.XYLabels
	for _, p := range r.Pairs {
		if p.A == SameNAT {
			title += fmt.Sprintf("; same-nat: %d/%d direct", p.Direct, p.Trials)
			continue
		}
		i, j := idx[p.A], idx[p.B]
		if p.Trials > 0 {
			g.rate[i][j] = float64(p.Direct) / float64(p.Trials)
		}
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(j), Y: float64(i)})
		mark := ""
		if !p.Met() {
			mark = " !"
		}
		labels.Labels = append(labels.Labels, fmt.Sprintf("%d/%d%s", p.Direct, p.Trials, mark))
	}
	pl := plot.New()
	pl.Title.Text = title
	pl.X.Label.Text = "B"
	pl.Y.Label.Text = "A"
	hm := plotter.NewHeatMap(g, redToGreen{})
	hm.Min, hm.Max = 0, 1
	hm.NaN = color.Gray{Y: 220}
	pl.Add(hm)
	lb, err := plotter.NewLabels(labels)
	if err != nil {
		return err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign = draw.XCenter
		lb.TextStyle[i].YAlign = draw.YCenter
		lb.TextStyle[i].Font.Size = vg.Points(10)
	}
	pl.Add(lb)
	ticks := make([]plot.Tick, len(types))
	for i, t := range types {
		ticks[i] = plot.Tick{Value: float64(i), Label: t}
	}
	pl.X.Tick.Marker = plot.ConstantTicks(ticks)
	pl.Y.Tick.Marker = plot.ConstantTicks(ticks)
	pl.X.Min, pl.X.Max = -0.5, float64(len(types))-0.5
	pl.Y.Min, pl.Y.Max = -0.5, float64(len(types))-0.5
	pl.Title.TextStyle.Font.Size = font.Length(11)
	c := vgsvg.New(8*vg.Inch, 6*vg.Inch)
	pl.Draw(draw.New(c))
	_, err = c.WriteTo(w)
	return err
}

// redToGreen is a palette from red (0: never direct) to green (1: always).
type redToGreen struct{}

func (redToGreen) Colors() []color.Color {
	const n = 11
	out := make([]color.Color, n)
	for i := range out {
		f := float64(i) / (n - 1)
		out[i] = color.RGBA{R: uint8(230 * (1 - f)), G: uint8(90 + 110*f), B: 80, A: 255}
	}
	return out
}

var _ palette.Palette = redToGreen{}

// WriteAll writes matrix.md, matrix.json and matrix.svg into dir.
func (r Report) WriteAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, fn := range map[string]func(io.Writer) error{"matrix.md": r.Markdown, "matrix.json": r.JSON, "matrix.svg": r.SVG} {
		var buf bytes.Buffer
		if err := fn(&buf); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
