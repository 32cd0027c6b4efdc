package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// comparison is one figure: Berth's value, its baseline's, and the goal.
type comparison struct {
	Figure   string
	Unit     string // "ms", "µs", "MB", "calls", ...
	Berth    float64
	Baseline float64 // NaN: the figure has no baseline
	// GoalRatio bounds Berth/Baseline (0: no ratio goal); GoalBelow bounds
	// Berth itself (0: none).
	GoalRatio float64
	GoalBelow float64
	// GoalAtMost bounds Berth itself, inclusively (0: none).
	GoalAtMost float64
}

// Ratio is Berth's value over the baseline's (NaN without a baseline).
func (c comparison) Ratio() float64 {
	if math.IsNaN(c.Baseline) {
		return math.NaN()
	}
	if c.Baseline == 0 {
		if c.Berth == 0 {
			return 1
		}
		return math.Inf(1)
	}
	return c.Berth / c.Baseline
}

// Met reports whether the figure meets its goals (true when it has none).
func (c comparison) Met() bool {
	if c.GoalRatio > 0 && !(c.Ratio() <= c.GoalRatio) {
		return false
	}
	if c.GoalBelow > 0 && !(c.Berth < c.GoalBelow) {
		return false
	}
	if c.GoalAtMost > 0 && !(c.Berth <= c.GoalAtMost) {
		return false
	}
	return true
}

func (c comparison) goal() string {
	var goals []string
	if c.GoalRatio > 0 {
		goals = append(goals, fmt.Sprintf("≤ %.2fx", c.GoalRatio))
	}
	if c.GoalBelow > 0 {
		goals = append(goals, fmt.Sprintf("< %s %s", number(c.GoalBelow), c.Unit))
	}
	if c.GoalAtMost > 0 {
		goals = append(goals, fmt.Sprintf("≤ %s %s", number(c.GoalAtMost), c.Unit))
	}
	if len(goals) == 0 {
		return "-"
	}
	return strings.Join(goals, ", ")
}

// verdict says whether the goal is met and, if not, by how much it is missed.
func (c comparison) verdict() string {
	if c.GoalRatio == 0 && c.GoalBelow == 0 && c.GoalAtMost == 0 {
		return "(no goal)"
	}
	if c.Met() {
		return "met"
	}
	var by []string
	if c.GoalRatio > 0 && !(c.Ratio() <= c.GoalRatio) {
		by = append(by, fmt.Sprintf("%.3fx against %.2fx, %.1f%% over", c.Ratio(), c.GoalRatio, (c.Ratio()/c.GoalRatio-1)*100))
	}
	if c.GoalBelow > 0 && !(c.Berth < c.GoalBelow) {
		by = append(by, fmt.Sprintf("%s %s against %s %s, %.1f%% over", number(c.Berth), c.Unit, number(c.GoalBelow), c.Unit, (c.Berth/c.GoalBelow-1)*100))
	}
	if c.GoalAtMost > 0 && !(c.Berth <= c.GoalAtMost) {
		by = append(by, fmt.Sprintf("%s %s against at most %s %s, %.1f%% over", number(c.Berth), c.Unit, number(c.GoalAtMost), c.Unit, (c.Berth/c.GoalAtMost-1)*100))
	}
	return "**MISSED**: " + strings.Join(by, "; ")
}

// report is one scenario's figures.
type report struct {
	Title  string
	Params string // what was measured, in a sentence
	Rows   []comparison
	Notes  []string
	// NotRun, when set, says why the scenario has no figures.
	NotRun  string
	Elapsed time.Duration
}

func (r *report) add(c comparison) { r.Rows = append(r.Rows, c) }

func (r *report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "## %s\n\n", r.Title)
	if r.NotRun != "" {
		fmt.Fprintf(w, "Not run: %s\n\n", r.NotRun)
		return
	}
	if r.Params != "" {
		fmt.Fprintf(w, "%s\n\n", r.Params)
	}
	fmt.Fprintln(w, "| figure | Berth | baseline | ratio | goal | result |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|---|")
	for _, c := range r.Rows {
		baseline, ratio := "-", "-"
		if !math.IsNaN(c.Baseline) {
			baseline = number(c.Baseline) + " " + c.Unit
			ratio = fmt.Sprintf("%.2fx", c.Ratio())
		}
		fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s | %s |\n", c.Figure, number(c.Berth), c.Unit, baseline, ratio, c.goal(), c.verdict())
	}
	fmt.Fprintln(w)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintf(w, "- scenario time: %s\n\n", r.Elapsed.Round(100*time.Millisecond))
}

// number prints a figure with three significant digits or so.
func number(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Sprint(v)
	case a == math.Trunc(a) && a < 1e6:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// sample is a set of durations.
type sample []time.Duration

// percentile returns the nearest-rank percentile p (0 < p <= 100).
func (s sample) percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := append(sample(nil), s...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// describeMachine says what the figures were measured on.
func describeMachine() string {
	var b strings.Builder
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- CPU: %s, %d cores (GOMAXPROCS %d)\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "- memory: %s\n", memTotal())
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "- kernel: Linux %s\n", strings.TrimSpace(string(kernel)))
	fmt.Fprintf(&b, "- Go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, tool := range [][]string{{"redis-server", "--version"}, {"podman", "--version"}} {
		if out, err := exec.Command(tool[0], tool[1:]...).Output(); err == nil {
			fmt.Fprintf(&b, "- %s\n", strings.TrimSpace(string(out)))
		}
	}
	b.WriteString("\n")
	return b.String()
}

func cpuModel() string {
	return procField("/proc/cpuinfo", "model name", "unknown CPU")
}

func memTotal() string {
	v := procField("/proc/meminfo", "MemTotal", "")
	kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64)
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", kb/(1<<20))
}

// procField reads "key: value" from a /proc file.
func procField(path, key, def string) string {
	f, err := os.Open(path)
	if err != nil {
		return def
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return def
}
