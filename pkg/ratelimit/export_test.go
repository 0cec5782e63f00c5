package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Decisions and Errors expose r's counters to the tests.
func Decisions(r *Redis) *prometheus.CounterVec { return r.decisions }
func Errors(r *Redis) prometheus.Counter        { return r.errors }
