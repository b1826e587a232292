package branchmp

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/logfield"
)

// AdminHandler returns a handler for operators, to be served on a private
// address and never on the public webhook port:
//
//	GET  /healthz                  200 while the process runs
//	GET  /readyz                   200 when the bridge can deliver, else 503 with the reason
//	GET  /deadletters?limit=N      dead letters as JSON, oldest first (default 100)
//	POST /deadletters/replay?id=N  queue dead letters again; repeat id, or all=true for every one
//	POST /deadletters/purge?id=N   delete dead letters; repeat id, or all=true for every one
//
// Replay and purge respond with {"count": N}.
func (b *Bridge) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := b.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /deadletters", b.listDeadLetters)
	mux.HandleFunc("POST /deadletters/replay", b.changeDeadLetters("replay", "replayed", b.Replay))
	mux.HandleFunc("POST /deadletters/purge", b.changeDeadLetters("purge", "purged", b.Purge))
	return mux
}

// deadLetterJSON is a dead letter as the admin handler lists it.
type deadLetterJSON struct {
	ID        uint64          `json:"id"`
	EventName string          `json:"event_name"`
	EventID   string          `json:"event_id,omitempty"`
	InsertID  string          `json:"insert_id"`
	Received  time.Time       `json:"received"`
	Stage     string          `json:"stage"`
	Reason    string          `json:"reason"`
	Status    int             `json:"status,omitempty"`
	Body      string          `json:"body,omitempty"`
	Attempts  int             `json:"attempts"`
	First     time.Time       `json:"first"`
	Last      time.Time       `json:"last"`
	Record    json.RawMessage `json:"record,omitempty"`
}

const defaultDeadLetterLimit = 100

func (b *Bridge) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	limit := defaultDeadLetterLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit must be a positive integer"})
			return
		}
		limit = n
	}
	dead, err := b.DeadLetters(limit)
	if err != nil {
		b.log.Error("listing dead letters failed", zap.Error(err))
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "listing dead letters failed"})
		return
	}
	out := make([]deadLetterJSON, len(dead))
	for i, dl := range dead {
		out[i] = deadLetterJSON{
			ID: dl.ID, EventName: dl.EventName, EventID: dl.EventID, InsertID: dl.InsertID,
			Received: dl.Received, Stage: dl.Stage, Reason: dl.Reason, Status: dl.Status,
			Body: dl.Body, Attempts: dl.Attempts, First: dl.First, Last: dl.Last, Record: dl.Record,
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// changeDeadLetters serves replay or purge. It needs explicit ids or
// all=true, so an empty request cannot act on every dead letter.
func (b *Bridge) changeDeadLetters(action, done string, apply func(...uint64) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var ids []uint64
		for _, v := range q["id"] {
			id, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "id must be a dead letter id: " + strconv.Quote(v)})
				return
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 && q.Get("all") != "true" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "name dead letters with id=N, or pass all=true"})
			return
		}
		n, err := apply(ids...)
		if err != nil {
			b.log.Error("dead letter "+action+" failed", zap.Error(err))
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": action + " failed"})
			return
		}
		b.log.Info("dead letters "+done, zap.Int(logfield.Count, n))
		writeJSON(w, http.StatusOK, map[string]int{"count": n})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
