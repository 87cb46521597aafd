package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the result of one run; its JSON form is what -json prints and
// what `callsim markdown` reads.
type Report struct {
	Command string  `json:"command"`
	Machine Machine `json:"machine"`
	Mode    string  `json:"mode"`  // spawn or url
	Model   string  `json:"model"` // echo, fake or none
	Calls   int     `json:"calls"`
	RampS   float64 `json:"rampSeconds"`
	HoldS   float64 `json:"holdSeconds"`

	// Connected calls heard the agent; Failed never did; Dropped were
	// connected but ended before callsim's stop.
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	Dropped   int            `json:"dropped"`
	Failures  map[string]int `json:"failures,omitempty"`

	Frames Frames `json:"frames"`
	// Delay is the echo delay the bridge added, over frames sent once the
	// call was live: RoundTrip is Twilio -> bridge -> model -> bridge ->
	// Twilio; TwilioToModel and ModelToTwilio split it at the echo model
	// (measured with -model echo only). The model answers at once on
	// loopback, so each figure is the bridge's delay plus two loopback hops.
	Delay struct {
		RoundTrip     Latency `json:"roundTrip"`
		TwilioToModel Latency `json:"twilioToModel"`
		ModelToTwilio Latency `json:"modelToTwilio"`
	} `json:"delay"`
	// AnswerToAudio is from the voice webhook's request to the first agent
	// audio at the caller: webhook, websocket, start, model dial, session
	// set-up and the first response.
	AnswerToAudio Latency `json:"answerToFirstAudio"`

	Bridge   Bridge   `json:"bridge"`
	LoadTool LoadTool `json:"loadTool"`
}

// Frames counts the caller's media frames and what came back.
type Frames struct {
	Sent       int64 `json:"sent"`
	Echoed     int64 `json:"echoed"`
	Lost       int64 `json:"lost"` // sent, never echoed (after the drain)
	Duplicates int64 `json:"duplicates"`
	Misrouted  int64 `json:"misrouted"` // echoed on another call's stream
	Stale      int64 `json:"stale"`     // echoed more than 10 s late (counted lost)
	Agent      int64 `json:"agentFrames"`
	Marks      int64 `json:"marksEchoed"`
	Clears     int64 `json:"clears"`
	Other      int64 `json:"otherMessages"`
}

// Bridge is what the bridge process cost over the hold (all calls live).
type Bridge struct {
	PID                int     `json:"pid,omitempty"`
	CPUSeconds         float64 `json:"cpuSeconds"`
	SysSeconds         float64 `json:"sysSeconds"` // of CPUSeconds, in the kernel
	CallSeconds        float64 `json:"callSeconds"`
	CPUMsPerCallSecond float64 `json:"cpuMsPerCallSecond"`
	CPUSPerCallMinute  float64 `json:"cpuSecondsPerCallMinute"`
	CoresUsed          float64 `json:"coresUsed"`
	RSSIdleMiB         float64 `json:"rssIdleMiB"`
	RSSPeakMiB         float64 `json:"rssPeakMiB"`
	RSSPerCallKiB      float64 `json:"rssPerCallKiB"`
	AllocsPerFrame     float64 `json:"allocsPerRelayedFrame"` // -1: /metrics unreadable
	FramesRelayed      float64 `json:"framesRelayed"`
	Goroutines         float64 `json:"goroutines"`
	// HeapInuseMiB and StackInuseMiB are the Go runtime's own view at the
	// end of the hold (heap spans in use, goroutine stacks).
	HeapInuseMiB  float64 `json:"heapInuseMiB"`
	StackInuseMiB float64 `json:"stackInuseMiB"`
}

// LoadTool is what callsim itself cost over the hold.
type LoadTool struct {
	CPUSeconds float64 `json:"cpuSeconds"`
	CoresUsed  float64 `json:"coresUsed"`
	// OthersCores is the CPU the rest of the machine used meanwhile
	// (everything but the bridge and callsim): a busy neighbour skews a run.
	OthersCores float64 `json:"othersCores"`
	// LateFrames were skipped because a pacer ran more than 5 frames late:
	// non-zero means the load tool, not the bridge, was short of CPU.
	LateFrames int64 `json:"lateFrames"`
}

// Machine says where a run happened.
type Machine struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpuModel"`
	GoVersion  string `json:"goVersion"`
	OS         string `json:"os"`
	Kernel     string `json:"kernel"`
	GOMAXPROCS int    `json:"gomaxprocs"`
}

func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// fill completes rep from the calls and the hold.
func (l *load) fill(rep *Report, h holdResult) {
	for _, c := range l.calls {
		f := c.failure.Load()
		switch {
		case c.liveAt.Load() == 0:
			rep.Failed++
		case f != nil:
			rep.Dropped++
		default:
			rep.Connected++
		}
		if f != nil {
			rep.Failures[clip(*f, 120)]++
		}
		fr := &rep.Frames
		fr.Sent += c.sent.Load()
		fr.Echoed += c.echoed.Load()
		fr.Duplicates += c.dup.Load()
		fr.Misrouted += c.misrouted.Load()
		fr.Stale += c.stale.Load()
		fr.Agent += c.agentFrames.Load()
		fr.Marks += c.marksEchoed.Load()
		fr.Clears += c.clears.Load()
		fr.Other += c.other.Load()
	}
	rep.Connected += rep.Dropped // connected counts every call that heard the agent
	rep.Frames.Lost = rep.Frames.Sent - rep.Frames.Echoed
	rep.Delay.RoundTrip = l.roundTrip.summary()
	rep.Delay.TwilioToModel = l.toModel.summary()
	rep.Delay.ModelToTwilio = l.toTwilio.summary()
	rep.AnswerToAudio = l.answer.summary()

	b := &rep.Bridge
	b.CallSeconds = float64(h.live) * h.wall.Seconds()
	if h.procOK {
		b.CPUSeconds = (h.cpu1.cpu - h.cpu0.cpu).Seconds()
		b.SysSeconds = (h.cpu1.sys - h.cpu0.sys).Seconds()
		b.CoresUsed = b.CPUSeconds / h.wall.Seconds()
		if b.CallSeconds > 0 {
			b.CPUMsPerCallSecond = 1000 * b.CPUSeconds / b.CallSeconds
			b.CPUSPerCallMinute = 60 * b.CPUSeconds / b.CallSeconds
		}
		if h.live > 0 {
			b.RSSPerCallKiB = float64(h.peakRSS-int64(rep.Bridge.RSSIdleMiB*(1<<20))) / 1024 / float64(h.live)
		}
	}
	b.AllocsPerFrame = -1
	if h.metrics0.ok && h.metric.ok {
		b.FramesRelayed = h.metric.frames - h.metrics0.frames
		if b.FramesRelayed > 0 {
			b.AllocsPerFrame = (h.metric.mallocs - h.metrics0.mallocs) / b.FramesRelayed
		}
		b.Goroutines = h.metric.goroutines
		b.HeapInuseMiB, b.StackInuseMiB = h.metric.heapInuse/(1<<20), h.metric.stackInuse/(1<<20)
	}
	rep.LoadTool = LoadTool{CPUSeconds: h.self.Seconds(), CoresUsed: h.self.Seconds() / h.wall.Seconds(),
		LateFrames: l.lateFrames.Load()}
	if h.all > 0 && h.procOK {
		rep.LoadTool.OthersCores = max(h.all.Seconds()-h.self.Seconds()-b.CPUSeconds, 0) / h.wall.Seconds()
	}
}

// WriteTable prints rep for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	p("calls\t%d (ramp %s, hold %s, model %s, %s)", r.Calls, secs(r.RampS), secs(r.HoldS), r.Model, r.Mode)
	p("connected / failed / dropped\t%d / %d / %d", r.Connected, r.Failed, r.Dropped)
	keys := make([]string, 0, len(r.Failures))
	for k := range r.Failures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p("  failure\t%d × %s", r.Failures[k], k)
	}
	f := r.Frames
	p("frames sent / echoed / lost\t%d / %d / %d", f.Sent, f.Echoed, f.Lost)
	if f.Duplicates+f.Misrouted+f.Stale+f.Other > 0 {
		p("  duplicates / misrouted / stale / other\t%d / %d / %d / %d", f.Duplicates, f.Misrouted, f.Stale, f.Other)
	}
	p("agent frames / marks echoed / clears\t%d / %d / %d", f.Agent, f.Marks, f.Clears)
	p("\tp50\tp90\tp99\tmax\tcount")
	lat := func(name string, l Latency) {
		p("%s\t%.3f ms\t%.3f ms\t%.3f ms\t%.3f ms\t%d", name, l.P50, l.P90, l.P99, l.Max, l.Count)
	}
	lat("echo round trip", r.Delay.RoundTrip)
	lat("  twilio -> model", r.Delay.TwilioToModel)
	lat("  model -> twilio", r.Delay.ModelToTwilio)
	lat("answer -> first audio", r.AnswerToAudio)
	b := r.Bridge
	p("bridge cpu\t%.2f s (%.2f s kernel) over %.0f call-s: %.3f ms per call-second, %.3f s per call-minute, %.2f cores",
		b.CPUSeconds, b.SysSeconds, b.CallSeconds, b.CPUMsPerCallSecond, b.CPUSPerCallMinute, b.CoresUsed)
	p("bridge rss\t%.1f MiB idle, %.1f MiB peak: %.1f KiB per call (Go heap in use %.1f MiB, stacks %.1f MiB)",
		b.RSSIdleMiB, b.RSSPeakMiB, b.RSSPerCallKiB, b.HeapInuseMiB, b.StackInuseMiB)
	if b.AllocsPerFrame >= 0 {
		p("bridge allocations\t%.2f per relayed frame (%.0f frames, %.0f goroutines)", b.AllocsPerFrame, b.FramesRelayed, b.Goroutines)
	}
	p("load tool cpu\t%.2f s, %.2f cores, %d late frames (other processes: %.2f cores)",
		r.LoadTool.CPUSeconds, r.LoadTool.CoresUsed, r.LoadTool.LateFrames, r.LoadTool.OthersCores)
	return tw.Flush()
}

func secs(s float64) string { return (time.Duration(s * float64(time.Second))).String() }
