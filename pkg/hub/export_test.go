package hub

// WriterBusy reports whether the session's writer holds a batch: between
// taking frames from the queue and noting, after their write, whether
// more came meanwhile (which decides its next coalescing wait).
func (s *Session) WriterBusy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy
}
