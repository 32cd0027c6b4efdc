package keylock

import (
	"sync"
	"testing"
)

func TestLockSerialisesOneKey(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	inside := map[string]int{}
	var mu sync.Mutex
	for i := 0; i < 50; i++ {
		for _, key := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				unlock := s.Lock(key)
				defer unlock()
				mu.Lock()
				inside[key]++
				if inside[key] != 1 {
					t.Errorf("%d holders of %s at once", inside[key], key)
				}
				mu.Unlock()
				mu.Lock()
				inside[key]--
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if len(s.locks) != 0 {
		t.Errorf("%d locks left after everyone unlocked", len(s.locks))
	}
}
