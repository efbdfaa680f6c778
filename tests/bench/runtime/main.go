// The Go anchor of scripts/bench runtime: the same measurements as
// bench_runtime.c with goroutines and channels (stdlib only). Prints
// go_chan_pingpong_ns, go_spawn_join_ns, go_bytes_per_parked (medians).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// cpuNs is the process CPU time (user + system), every thread included.
func cpuNs() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// lastCPU is the CPU ns per operation of the last measurement.
var lastCPU float64

func median(v []float64) float64 {
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func pingpong() float64 {
	const n = 1000000
	a, b := make(chan int), make(chan int)
	go func() {
		for i := 0; i < n; i++ {
			v := <-a
			b <- v
		}
	}()
	t0, c0 := time.Now(), cpuNs()
	for i := 0; i < n; i++ {
		a <- i
		<-b
	}
	lastCPU = float64(cpuNs()-c0) / (2 * n)
	return float64(time.Since(t0).Nanoseconds()) / (2 * n)
}

func spawnJoin() float64 {
	const n = 1000000
	done := make(chan struct{})
	t0, c0 := time.Now(), cpuNs()
	for i := 0; i < n; i++ {
		go func() { done <- struct{}{} }()
		<-done
	}
	lastCPU = float64(cpuNs()-c0) / n
	return float64(time.Since(t0).Nanoseconds()) / n
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var pages, resident int64
	fmt.Sscan(string(b), &pages, &resident)
	return resident * int64(os.Getpagesize())
}

func parked() float64 {
	const n = 100000
	ch := make(chan int)
	done := make(chan struct{}, n)
	runtime.GC()
	before := rss()
	for i := 0; i < n; i++ {
		go func() { <-ch; done <- struct{}{} }()
	}
	time.Sleep(100 * time.Millisecond)
	after := rss()
	close(ch)
	for i := 0; i < n; i++ {
		<-done
	}
	return float64(after-before) / n
}

// measure returns the medians of f's wall and CPU figures over runs.
func measure(runs int, f func() float64) (float64, float64) {
	v := make([]float64, runs)
	c := make([]float64, runs)
	for i := range v {
		v[i] = f()
		c[i] = lastCPU
	}
	return median(v), median(c)
}

func main() {
	runs := 5
	if len(os.Args) > 1 {
		if r, err := strconv.Atoi(os.Args[1]); err == nil && r > 0 {
			runs = r
		}
	}
	w, c := measure(runs, pingpong)
	fmt.Printf("go_chan_pingpong_ns=%.1f\ngo_chan_pingpong_ns_cpu=%.1f\n", w, c)
	w, c = measure(runs, spawnJoin)
	fmt.Printf("go_spawn_join_ns=%.1f\ngo_spawn_join_ns_cpu=%.1f\n", w, c)
	// Parked goroutines: measured once per fresh process run would be
	// cleaner; the first run is the one that grows RSS, so take it alone.
	fmt.Printf("go_bytes_per_parked=%.0f\n", parked())
}
