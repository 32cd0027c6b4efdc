// Package keylock serialises work by key: the provisions of one node group
// or of one Idempotency-Key, the deprovisions of one node. Drivers use it so
// that work on different keys runs in parallel and work on one key does not.
package keylock

import "sync"

// Set is a set of locks created on demand and dropped when nobody holds or
// waits for them. The zero value is ready to use.
type Set struct {
	mu    sync.Mutex
	locks map[string]*lock
}

type lock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by Set.mu
}

// Lock locks key, waiting while another holds it, and returns the function
// that unlocks it.
func (s *Set) Lock(key string) (unlock func()) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*lock{}
	}
	l := s.locks[key]
	if l == nil {
		l = &lock{}
		s.locks[key] = l
	}
	l.refs++
	s.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}
