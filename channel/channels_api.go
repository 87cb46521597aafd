package channel

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
)

// channelList is the answer of GET /v1/channels.
type channelList struct {
	Channels []Channel `json:"channels"`
}

// channelChange answers a create, PATCH or origin-ips: the channel's own
// fields, and how the IP allow-list sync after the change went.
type channelChange struct {
	Channel
	ACLSync ACLStatus `json:"aclSync"`
}

// syncACL syncs the IP allow list after a change of channels and puts the
// outcome in the ACLSyncHeader; a failure does not fail the request.
func (a *API) syncACL(w http.ResponseWriter, r *http.Request) ACLStatus {
	st := a.prov.SyncAllowList(r.Context())
	w.Header().Set(ACLSyncHeader, st.header())
	return st
}

// originIPsBody is the body of PUT /v1/channels/{id}/origin-ips.
type originIPsBody struct {
	IPs []string `json:"ips"`
}

// agentBody is the body of PUT /v1/channels/{id}/agent.
type agentBody struct {
	AgentID string `json:"agentId"`
}

// readOnlyFields are outputs a client may send back unchanged; they are ignored.
var readOnlyFields = map[string]bool{"eventsSecret": true, "destination": true}

func (a *API) createChannel(w http.ResponseWriter, r *http.Request) {
	var in Channel
	if err := decodeBody(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	out, err := a.prov.CreateChannel(r.Context(), in)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	acl := a.syncACL(w, r)
	w.Header().Set("Location", "/v1/channels/"+out.ID)
	writeJSON(w, http.StatusCreated, channelChange{Channel: out, ACLSync: acl})
}

func (a *API) listChannels(w http.ResponseWriter, r *http.Request) {
	list, err := a.prov.Channels(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if list == nil {
		list = []Channel{}
	}
	writeJSON(w, http.StatusOK, channelList{Channels: list})
}

func (a *API) getChannel(w http.ResponseWriter, r *http.Request) {
	out, err := a.prov.Channel(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", ETag(out))
	writeJSON(w, http.StatusOK, out)
}

// patchChannel applies a JSON merge patch (RFC 7386): given fields replace
// the stored ones, null removes one (back to its default), absent fields
// stay. Every channel field is a scalar or a list, so a flat merge is the
// whole of RFC 7386 here.
func (a *API) patchChannel(w http.ResponseWriter, r *http.Request) {
	var patch map[string]json.RawMessage
	if err := decodeBody(w, r, &patch); err != nil {
		a.fail(w, r, err)
		return
	}
	if patch == nil {
		a.fail(w, r, badRequest("invalid_json", "the body must be a JSON object"))
		return
	}
	known := jsonFields(reflect.TypeFor[Channel]())
	for k := range patch {
		if !known[k] {
			a.fail(w, r, badRequest("unknown_field", "unknown field %q", k))
			return
		}
	}
	out, err := a.prov.UpdateChannelIf(r.Context(), r.PathValue("id"), ifMatch(r), func(c *Channel) error {
		return mergeChannel(c, patch)
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	shown := out
	shown.EventsSecret = "" // the tag of the version a GET shows
	w.Header().Set("ETag", ETag(shown))
	acl := a.syncACL(w, r)
	writeJSON(w, http.StatusOK, channelChange{Channel: out, ACLSync: acl})
}

// mergeChannel applies patch to c through c's JSON form.
func mergeChannel(c *Channel, patch map[string]json.RawMessage) error {
	cur := *c
	cur.EventsSecret, cur.Destination = "", nil
	data, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	for k, v := range patch {
		switch {
		case readOnlyFields[k]:
		case bytes.Equal(bytes.TrimSpace(v), []byte("null")):
			delete(doc, k)
		default:
			doc[k] = v
		}
	}
	merged, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	var next Channel
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&next); err != nil {
		return jsonError(err)
	}
	if next.ID == "" { // "id": null keeps the id
		next.ID = c.ID
	}
	*c = next
	return nil
}

func (a *API) deleteChannel(w http.ResponseWriter, r *http.Request) {
	if err := a.prov.DeleteChannel(r.Context(), r.PathValue("id")); err != nil {
		a.fail(w, r, err)
		return
	}
	a.syncACL(w, r)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) putOriginIPs(w http.ResponseWriter, r *http.Request) {
	var in originIPsBody
	if err := decodeBody(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	out, err := a.prov.SetOriginIPs(r.Context(), r.PathValue("id"), in.IPs)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	acl := a.syncACL(w, r)
	writeJSON(w, http.StatusOK, channelChange{Channel: out, ACLSync: acl})
}

func (a *API) putChannelAgent(w http.ResponseWriter, r *http.Request) {
	var in agentBody
	if err := decodeBody(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	out, err := a.prov.SetAgent(r.Context(), r.PathValue("id"), in.AgentID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// jsonFields returns the JSON names of t's exported fields.
func jsonFields(t reflect.Type) map[string]bool {
	out := make(map[string]bool, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "-" && name != "" {
			out[name] = true
		}
	}
	return out
}
