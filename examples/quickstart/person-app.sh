#!/usr/bin/env bash
# Quick start for a person's mobile app (README "Quick start: the person's app"), in curl:
#   1. the person signs in (SMART App Launch standalone: authorization code + PKCE S256) — an app opens
#      a browser for this; here curl plays the browser (cookies, the login form, the consent form);
#   2. the app pushes the person's checkup report HS037 (a FHIR document) by IHE MHD ITI-65, the
#      document as a Binary with its size and SHA-1 hash: 200, or 422 with the validator's issues;
#   3. the same document broken (an Observation without its code): 422 naming the element, nothing stored;
#   4. the app lists the person's documents (ITI-67) and retrieves the new one (ITI-68).
# Needs bash, curl, openssl and coreutils. Defaults: the development server of `bash scripts/serve.sh`
# and its development person and app (examples/auth/clients.dev.json); override with the variables below.
# The person's Patient must be registered first (README "Try it" registers yamada's, 00012345).
set -euo pipefail

BASE=${BASE:-http://127.0.0.1:8080}
CLIENT_ID=${CLIENT_ID:-dev-phr-app}
REDIRECT_URI=${REDIRECT_URI:-http://127.0.0.1:8765/callback}
PHR_USERNAME=${PHR_USERNAME:-yamada}
PHR_PASSWORD=${PHR_PASSWORD:-yamada-dev-password}
DOCUMENT=${DOCUMENT:-$(dirname "${BASH_SOURCE[0]}")/../documents/HS037-checkup-report.json}

work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
jar="$work/cookies"

fail() { echo "person-app.sh: $*" >&2; exit 1; }

# The hidden fields of the HTML form in $1 as curl arguments (--data-urlencode name=value), decoded
# from the HTML encoding the server writes them in (&amp; &quot; &lt; &gt; and &#xHH;).
form_fields() {
    local html=$1 input name value
    fields=()
    while IFS= read -r input; do
        name=${input#*name=\"}; name=${name%%\"*}
        value=${input#*value=\"}; value=${value%%\"*}
        while [[ $value =~ \&#x([0-9A-Fa-f]+)\; ]]; do
            value=${value//"${BASH_REMATCH[0]}"/$(printf "\\U$(printf %08X "0x${BASH_REMATCH[1]}")")}
        done
        value=${value//'&quot;'/\"}; value=${value//'&lt;'/<}; value=${value//'&gt;'/>}; value=${value//'&amp;'/\&}
        fields+=(--data-urlencode "$name=$value")
    done < <(grep -o '<input type="hidden" name="[^"]*" value="[^"]*">' <<<"$html")
}

# --- 1. sign in: authorization code + PKCE --------------------------------------------------------
verifier=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
challenge=$(printf %s "$verifier" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n')
state=$(openssl rand -hex 16)

# The app opens this URL in a browser: the login page.
login_page=$(curl -sS -c "$jar" -b "$jar" -G "$BASE/auth/authorize" \
    --data-urlencode response_type=code --data-urlencode "client_id=$CLIENT_ID" \
    --data-urlencode "redirect_uri=$REDIRECT_URI" --data-urlencode "state=$state" --data-urlencode "aud=$BASE" \
    --data-urlencode 'scope=patient/*.cruds openid fhirUser launch/patient offline_access' \
    --data-urlencode "code_challenge=$challenge" --data-urlencode code_challenge_method=S256)
form_fields "$login_page"
# The person types their username and password; the server sends the browser back to the authorization request.
consent_url=$(curl -sS -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$BASE/auth/login" "${fields[@]}" \
    --data-urlencode "username=$PHR_USERNAME" --data-urlencode "password=$PHR_PASSWORD")
[ -n "$consent_url" ] || fail "sign-in refused (wrong username or password?)"
# The consent page: the person allows the app.
form_fields "$(curl -sS -c "$jar" -b "$jar" "$consent_url")"
callback=$(curl -sS -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$BASE/auth/authorize" "${fields[@]}" --data-urlencode decision=allow)
# The browser comes back to the app's redirect URI with the code and the state the app sent.
[[ $callback == "$REDIRECT_URI?"* ]] || fail "no redirect to the app: '$callback'"
[[ $callback == *"state=$state"* ]] || fail "the state came back changed: '$callback'"
code=$(sed -E 's/.*[?&]code=([^&]*).*/\1/' <<<"$callback")

# The app exchanges the code (with the verifier only it knows) for a token and the person's Patient id.
token_response=$(curl -sS "$BASE/auth/token" -d grant_type=authorization_code -d "client_id=$CLIENT_ID" \
    --data-urlencode "code=$code" --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$verifier")
TOKEN=$(grep -o '"access_token": *"[^"]*"' <<<"$token_response" | cut -d'"' -f4)
PATIENT=$(grep -o '"patient": *"[^"]*"' <<<"$token_response" | cut -d'"' -f4)
[ -n "$TOKEN" ] && [ -n "$PATIENT" ] || fail "no token or no patient context: $token_response"
echo "signed in: Patient/$PATIENT"
AUTH="Authorization: Bearer $TOKEN"

# --- 2. push the HS037 by ITI-65 -----------------------------------------------------------------
# An ITI-65 transaction (MHD Minimal metadata, what an app knows): a SubmissionSet List, the DocumentReference describing
# the document, and the document itself as a Binary. Unique ids are urn:oid:2.25.<a UUID as a number>.
uuid() { local h; h=$(openssl rand -hex 16); echo "${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}"; }
new_uid() { echo "urn:oid:2.25.$(printf '%d' "0x$(openssl rand -hex 7)")$(printf '%d' "0x$(openssl rand -hex 7)")"; }
iti65() { # $1: the document file; prints the transaction Bundle
    local data size hash now doc bin
    doc="urn:uuid:$(uuid)"; bin="urn:uuid:$(uuid)"
    data=$(base64 -w0 "$1")
    size=$(wc -c <"$1")
    hash=$(openssl dgst -sha1 -binary "$1" | base64)
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cat <<EOF
{"resourceType": "Bundle", "type": "transaction",
 "meta": {"profile": ["https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.ProvideBundle"]},
 "entry": [
  {"fullUrl": "urn:uuid:$(uuid)", "request": {"method": "POST", "url": "List"},
   "resource": {"resourceType": "List",
     "meta": {"profile": ["https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.SubmissionSet"]},
     "extension": [{"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId", "valueIdentifier": {"value": "urn:oid:1.2.392.999.1"}}],
     "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": "$(new_uid)"}],
     "status": "current", "mode": "working",
     "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}]},
     "subject": {"reference": "Patient/$PATIENT"}, "date": "$now",
     "entry": [{"item": {"reference": "$doc"}}]}},
  {"fullUrl": "$doc", "request": {"method": "POST", "url": "DocumentReference"},
   "resource": {"resourceType": "DocumentReference",
     "meta": {"profile": ["https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.DocumentReference"]},
     "masterIdentifier": {"use": "usual", "system": "urn:ietf:rfc:3986", "value": "$(new_uid)"},
     "status": "current",
     "type": {"coding": [{"system": "http://loinc.org", "code": "53576-5", "display": "Personal health monitoring report Document"}]},
     "subject": {"reference": "Patient/$PATIENT"}, "date": "$now", "description": "健康診断結果報告書",
     "content": [{"attachment": {"contentType": "application/fhir+json", "language": "ja", "url": "$bin",
                                 "size": $size, "hash": "$hash", "title": "健康診断結果報告書"}}]}},
  {"fullUrl": "$bin", "request": {"method": "POST", "url": "Binary"},
   "resource": {"resourceType": "Binary", "contentType": "application/fhir+json", "data": "$data"}}]}
EOF
}

iti65 "$DOCUMENT" >"$work/iti65.json"
status=$(curl -sS -o "$work/pushed.json" -w '%{http_code}' -X POST "$BASE" -H "$AUTH" \
    -H 'Content-Type: application/fhir+json' --data-binary @"$work/iti65.json")
[ "$status" = 200 ] || fail "ITI-65 answered $status: $(cat "$work/pushed.json")"
# The transaction-response's second entry is the DocumentReference: its location ends …/DocumentReference/{id}/_history/1.
DOCREF=$(grep -o '"location": *"[^"]*DocumentReference/[^"/]*' "$work/pushed.json" | head -n 1 | grep -o 'DocumentReference/.*')
echo "pushed: $DOCREF"

# --- 3. a broken HS037: the validator's issues, nothing stored ----------------------------------
# The same report claiming to be a referral (診療情報提供書, LOINC 57133-1) in its Composition.type, which
# the checkup-report profile fixes: 422, each issue with the path of the element at fault.
sed '0,/"code": "53576-5"/s//"code": "57133-1"/' "$DOCUMENT" >"$work/broken-doc.json"
iti65 "$work/broken-doc.json" >"$work/broken.json"
status=$(curl -sS -o "$work/refused.json" -w '%{http_code}' -X POST "$BASE" -H "$AUTH" \
    -H 'Content-Type: application/fhir+json' --data-binary @"$work/broken.json")
[ "$status" = 422 ] || fail "the broken HS037 answered $status, not 422: $(cat "$work/refused.json")"
# Each error issue's path (one issue per line: split before each object that opens an issue or its rule).
sed 's/},{"extension"/}\n{"extension"/g; s/},{"severity"/}\n{"severity"/g' "$work/refused.json" \
    | grep '"severity":"error"' | grep -o '"expression":\["[^"]*"' | cut -d'"' -f4 | sed 's/^/refused at: /'

# --- 4. the person's documents --------------------------------------------------------------------
curl -sS -G "$BASE/DocumentReference" -H "$AUTH" --data-urlencode "patient=Patient/$PATIENT" \
    --data-urlencode status=current -o "$work/found.json"
grep -q "\"id\": *\"${DOCREF#DocumentReference/}\"" "$work/found.json" || fail "ITI-67 does not list $DOCREF"
echo "listed: $(grep -o '"total": *[0-9]*' "$work/found.json" | head -n 1 | grep -o '[0-9]*$') current documents"

# ITI-68: the document's bytes from the DocumentReference's attachment.url, the same as were pushed
# (asked for without a FHIR Accept type: the document itself, not a Binary resource wrapping it).
curl -sS "$BASE/$DOCREF" -H "$AUTH" -o "$work/docref.json"
url=$(grep -o '"url": *"[^"]*Binary/[^"]*"' "$work/docref.json" | head -n 1 | cut -d'"' -f4)
curl -sS "$url" -H "$AUTH" -o "$work/retrieved.json"
cmp -s "$work/retrieved.json" "$DOCUMENT" || fail "ITI-68 returned other bytes than were pushed ($url)"
echo "retrieved: $url (the same bytes)"
