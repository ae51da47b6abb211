package bench

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// georepFilesSent sums the data items of georep's JSON "batch applied"
// log lines; -1 when there were none (an older log format, say).
func georepFilesSent(out []byte) int {
	n, seen := 0, false
	for _, line := range bytes.Split(out, []byte("\n")) {
		var rec struct {
			Msg  string `json:"msg"`
			Data *int   `json:"data"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "batch applied" || rec.Data == nil {
			continue
		}
		n += *rec.Data
		seen = true
	}
	if !seen {
		return -1
	}
	return n
}

// rsyncFilesSent reads --stats' "Number of regular files transferred:
// 20,004"; -1 when absent.
func rsyncFilesSent(out []byte) int {
	const label = "Number of regular files transferred:"
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), label); ok {
			if n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(v), ",", "")); err == nil {
				return n
			}
		}
	}
	return -1
}
