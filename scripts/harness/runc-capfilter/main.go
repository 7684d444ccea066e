// runc-capfilter: a runc wrapper for hosts whose bounding set lacks some
// capabilities (here CAP_SYS_RESOURCE). Docker 20.10 asks for every
// capability the kernel knows for --privileged containers, and runc then
// fails with "unable to apply caps: operation not permitted". This wrapper
// drops, from the bundle's config.json (create/run) and from the --process
// file (exec), every capability that is not in its own CapBnd, then execs
// the real runc with the unchanged arguments.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const realRunc = "/usr/sbin/runc"

var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// allowed returns the set of capability names in this process's bounding set.
func allowed() (map[string]bool, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "CapBnd:") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		if err != nil {
			return nil, err
		}
		ok := map[string]bool{}
		for i, n := range capNames {
			if mask&(1<<uint(i)) != 0 {
				ok[n] = true
			}
		}
		return ok, nil
	}
	return nil, fmt.Errorf("no CapBnd in /proc/self/status")
}

func filterList(v interface{}, ok map[string]bool) (interface{}, bool) {
	list, isList := v.([]interface{})
	if !isList {
		return v, false
	}
	out := make([]interface{}, 0, len(list))
	for _, c := range list {
		if s, isStr := c.(string); isStr && !ok[strings.ToUpper(s)] {
			continue
		}
		out = append(out, c)
	}
	return out, len(out) != len(list)
}

// filterCaps edits a process object ({"capabilities": {...}}) in place.
func filterCaps(proc map[string]interface{}, ok map[string]bool) bool {
	caps, isMap := proc["capabilities"].(map[string]interface{})
	if !isMap {
		return false
	}
	changed := false
	for k, v := range caps {
		nv, c := filterList(v, ok)
		caps[k] = nv
		changed = changed || c
	}
	return changed
}

func rewrite(path string, isBundleConfig bool, ok map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	proc := doc
	if isBundleConfig {
		p, isMap := doc["process"].(map[string]interface{})
		if !isMap {
			return nil
		}
		proc = p
	}
	if !filterCaps(proc, ok) {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, st.Mode().Perm())
}

// flagValue finds --name VALUE, --name=VALUE or -s VALUE after the subcommand.
func flagValue(args []string, long, short string) (string, bool) {
	for i, a := range args {
		switch {
		case a == "--"+long || (short != "" && a == "-"+short):
			if i+1 < len(args) {
				return args[i+1], true
			}
		case strings.HasPrefix(a, "--"+long+"="):
			return strings.TrimPrefix(a, "--"+long+"="), true
		}
	}
	return "", false
}

func subcommand(args []string) (string, int) {
	// global flags that take a value
	withValue := map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if withValue[a] {
				i++
			}
			continue
		}
		return a, i
	}
	return "", len(args)
}

func main() {
	args := os.Args[1:]
	if ok, err := allowed(); err == nil {
		cmd, idx := subcommand(args)
		rest := args[idx:]
		switch cmd {
		case "create", "run":
			bundle, found := flagValue(rest, "bundle", "b")
			if !found {
				bundle = "."
			}
			if err := rewrite(filepath.Join(bundle, "config.json"), true, ok); err != nil {
				fmt.Fprintf(os.Stderr, "runc-capfilter: %v\n", err)
			}
		case "exec":
			if p, found := flagValue(rest, "process", "p"); found {
				if err := rewrite(p, false, ok); err != nil {
					fmt.Fprintf(os.Stderr, "runc-capfilter: %v\n", err)
				}
			}
		}
	} else {
		fmt.Fprintf(os.Stderr, "runc-capfilter: %v\n", err)
	}
	err := syscall.Exec(realRunc, append([]string{realRunc}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "runc-capfilter: exec %s: %v\n", realRunc, err)
	os.Exit(127)
}
