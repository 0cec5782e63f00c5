package hub

import "weak"

// A room's frame cache lets every local reader of a stored message share one
// Frame, and so one encoding per wire format: live fan-out, each joiner's
// replay and REST history reads. It holds the frames weakly: a frame lives
// as long as some session's queue or writer holds it, and the cache only
// finds it again meanwhile. So 32 clients that join a room and never read
// share one copy of its replay instead of holding 32, and a quiet room
// costs nothing but the map.
//
// The map is pruned to the ids within cacheSpan of the newest, and cleared
// when the room's epoch changes. Guarded by the room's mu.
type frameCache struct {
	epoch  string
	top    uint64
	frames map[uint64]weak.Pointer[Frame]
}

// cacheSpan is how many ids below the newest the cache keeps entries for:
// twice the default history size, so that a replay finds its frames.
const cacheSpan = 256

// get returns the live frame for (epoch, seq), or nil.
func (c *frameCache) get(epoch string, seq uint64) *Frame {
	if c.frames == nil || epoch != c.epoch {
		return nil
	}
	return c.frames[seq].Value()
}

// put remembers f as the frame for (epoch, seq).
func (c *frameCache) put(epoch string, seq uint64, f *Frame) {
	if c.frames == nil || epoch != c.epoch {
		c.frames = make(map[uint64]weak.Pointer[Frame])
		c.epoch, c.top = epoch, 0
	}
	c.frames[seq] = weak.Make(f)
	if seq <= c.top {
		return
	}
	c.top = seq
	if len(c.frames) > 2*cacheSpan {
		for id, p := range c.frames {
			if id+cacheSpan < c.top || p.Value() == nil {
				delete(c.frames, id)
			}
		}
	}
}
