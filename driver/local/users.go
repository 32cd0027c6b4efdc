package local

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// credential is an account a process runs as.
type credential struct {
	User     string
	UID, GID uint32
	Home     string
}

// lookupCredential resolves a user (and optional group) name. An empty user
// means Berth's own account (nil). Another account needs Berth to be root,
// or it is an EUNPROCESSABLE-worthy error: the spec cannot run here.
func lookupCredential(userName, groupName string) (*credential, error) {
	if userName == "" {
		if groupName != "" {
			return nil, fmt.Errorf("group %q is given without a user", groupName)
		}
		return nil, nil
	}
	u, err := user.Lookup(userName)
	if err != nil {
		return nil, fmt.Errorf("user %q does not exist on this machine: %w", userName, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has a non-numeric uid %q", userName, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has a non-numeric gid %q", userName, u.Gid)
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			return nil, fmt.Errorf("group %q does not exist on this machine: %w", groupName, err)
		}
		if gid, err = strconv.ParseUint(g.Gid, 10, 32); err != nil {
			return nil, fmt.Errorf("group %q has a non-numeric gid %q", groupName, g.Gid)
		}
	}
	c := &credential{User: userName, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if !isRoot() && c.UID != uint32(geteuid()) {
		return nil, fmt.Errorf("it runs as user %q, and berth runs as uid %d, not root, so it cannot switch to that account", userName, geteuid())
	}
	return c, nil
}

// sysProcAttr returns the attributes a process of this account starts with:
// its own session (so it outlives Berth) and, for another account, its ids.
func (c *credential) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setsid: true}
	if c != nil && (c.UID != uint32(os.Geteuid()) || c.GID != uint32(os.Getegid())) {
		attr.Credential = &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: []uint32{}}
	}
	return attr
}

// chownTree gives a directory tree to the account.
func (c *credential) chownTree(dirs ...string) error {
	if c == nil || !isRoot() {
		return nil
	}
	for _, dir := range dirs {
		if err := os.Lchown(dir, int(c.UID), int(c.GID)); err != nil {
			return fmt.Errorf("giving %s to %s: %w", dir, c.User, err)
		}
	}
	return nil
}

// checkReach reports a directory on the way to dir that the account cannot
// pass through: a process of another account must reach its node's files,
// and a data directory under a private home directory would stop it.
func (c *credential) checkReach(dir string) error {
	if c == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		mode := info.Mode().Perm()
		canPass := mode&0o001 != 0 ||
			ok && st.Gid == c.GID && mode&0o010 != 0 ||
			ok && st.Uid == c.UID && mode&0o100 != 0
		if !canPass {
			return fmt.Errorf("user %s cannot reach %s: %s is mode %04o; choose a --data-dir that other accounts can pass through, or run chmod o+x %s",
				c.User, dir, p, mode, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
