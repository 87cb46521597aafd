package channel

import "net/http"

// agentList is the answer of GET /v1/agents.
type agentList struct {
	Agents []Agent `json:"agents"`
}

func (a *API) createAgent(w http.ResponseWriter, r *http.Request) {
	var in Agent
	if err := decodeBody(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	out, err := a.prov.CreateAgent(r.Context(), in)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/agents/"+out.ID)
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) listAgents(w http.ResponseWriter, r *http.Request) {
	list, err := a.prov.Agents(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if list == nil {
		list = []Agent{}
	}
	writeJSON(w, http.StatusOK, agentList{Agents: list})
}

func (a *API) getAgent(w http.ResponseWriter, r *http.Request) {
	out, err := a.prov.Agent(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", ETag(out))
	writeJSON(w, http.StatusOK, out)
}

// putAgent replaces the agent, or creates it (201) when the id is new.
func (a *API) putAgent(w http.ResponseWriter, r *http.Request) {
	var in Agent
	if err := decodeBody(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	out, created, err := a.prov.PutAgentIf(r.Context(), r.PathValue("id"), ifMatch(r), in)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", ETag(out))
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, out)
}

func (a *API) deleteAgent(w http.ResponseWriter, r *http.Request) {
	if err := a.prov.DeleteAgent(r.Context(), r.PathValue("id")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
