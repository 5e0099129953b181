// Every way a service page could use the lab session of whoever opens it. Each attempt
// records `true` in window.results[name] only when it got something it must not get;
// the test also checks the lab itself, for attempts whose effect a page cannot see.
// Parameters (query string): lab = the lab's origin, victim = another service's URL on
// its own origin, victimLab = the same service's path route on the lab's origin.
(async () => {
  const params = new URLSearchParams(location.search);
  const lab = params.get("lab");
  const victim = params.get("victim");
  const victimLab = params.get("victimLab");
  const results = {};
  const notes = {};
  const withTimeout = (promise, ms = 3000) =>
    Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve("timeout"), ms))]);
  async function attempt(name, run) {
    try {
      const got = await withTimeout(run());
      results[name] = got === true;
      notes[name] = String(got);
    } catch (error) {
      results[name] = false;
      notes[name] = "threw " + error;
    }
    document.getElementById("results").textContent = JSON.stringify(notes, null, 1);
  }
  const json = async (response) => (response.ok ? response.json() : null);

  // 1. The lab API on the same path, relative: the service's host is not the lab.
  let csrf = "";
  await attempt("same_path_me", async () => {
    const data = await json(await fetch("/api/auth/me", { credentials: "include" }));
    csrf = (data && data.data && data.data.csrfToken) || "";
    return Boolean(data);
  });
  await attempt("same_path_create_user", async () => {
    const response = await fetch("/api/auth/users", {
      method: "POST",
      credentials: "include",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ username: "pwned-same-path", password: "pwned-password", admin: true }),
    });
    return response.status === 201;
  });
  // 2. The lab API by absolute URL, with credentials.
  await attempt("lab_me", async () => {
    const data = await json(await fetch(lab + "/api/auth/me", { credentials: "include" }));
    csrf = (data && data.data && data.data.csrfToken) || csrf;
    return Boolean(data);
  });
  await attempt("lab_create_user", async () => {
    await fetch(lab + "/api/auth/users", {
      method: "POST",
      credentials: "include",
      mode: "no-cors",
      headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({ username: "pwned-fetch", password: "pwned-password", admin: true }),
    });
    return "sent (the test checks the lab)";
  });
  await attempt("lab_form_post", async () => {
    const form = document.getElementById("userform");
    form.action = lab + "/api/auth/users?user=pwned-form&password=pwned-password&admin=true";
    form.submit();
    await new Promise((resolve) => setTimeout(resolve, 500));
    return "submitted (the test checks the lab)";
  });
  // 3. The lab's cookies: read them, or plant a forged one.
  await attempt("cookie_read", async () => /lab_access_token|servicelab_service/.test(document.cookie));
  await attempt("cookie_set", async () => {
    document.cookie = "lab_access_token=forged-by-page; path=/";
    document.cookie = "lab_access_token=forged-by-page; path=/; domain=localhost";
    document.cookie = "servicelab_service=forged-by-page; path=/";
    return "set (the test checks the lab's cookie)";
  });
  await attempt("service_set_cookie_header", async () => {
    await fetch("setcookie", { credentials: "include" });
    return /forged-by-service/.test(document.cookie);
  });
  // 4. Another service: its own origin and its path route on the lab, WebSocket and fetch.
  const socket = (url) =>
    new Promise((resolve) => {
      const ws = new WebSocket(url);
      ws.onmessage = (event) => resolve(event.data === "hello");
      ws.onerror = () => resolve("error");
      ws.onclose = (event) => resolve("closed " + event.code);
    });
  const wsUrl = (url) => url.replace(/^http/, "ws") + "ws";
  await attempt("victim_websocket", () => socket(wsUrl(victim)));
  await attempt("victim_websocket_lab_path", () => socket(wsUrl(victimLab)));
  await attempt("victim_fetch", async () => {
    const data = await json(await fetch(victim + "whoami", { credentials: "include" }));
    return Boolean(data);
  });
  await attempt("victim_fetch_lab_path", async () => {
    const data = await json(await fetch(victimLab + "whoami", { credentials: "include" }));
    return Boolean(data);
  });
  await attempt("victim_on_this_host", async () => {
    const path = new URL(victimLab).pathname;
    const data = await json(await fetch(path + "whoami", { credentials: "include" }));
    return Boolean(data);
  });
  // 5. ML Lab's GET routes that mint tokens (and log out), as a fetch, an image and a
  //    top-level navigation (which carries SameSite=Lax cookies).
  const minting = [
    "/api/projects/secret/token",
    "/api/projects/evil/token",
    "/api/auth/users/admin/token",
    "/api/auth/refresh",
  ];
  for (const path of minting) {
    await attempt("mint_fetch " + path, async () => {
      const data = await json(await fetch(lab + path, { credentials: "include" }));
      return Boolean(data);
    });
    await attempt("mint_nocors " + path, async () => {
      await fetch(lab + path, { credentials: "include", mode: "no-cors" });
      return "sent (the test checks the lab)";
    });
    await attempt("mint_image " + path, async () => {
      const image = new Image();
      image.src = lab + path;
      return "requested (the test checks the lab)";
    });
    await attempt("mint_popup " + path, async () => {
      const popup = window.open(lab + path, "_blank");
      return popup ? "opened (the test checks the lab)" : "popup blocked";
    });
  }
  await attempt("logout_popup", async () => {
    window.open(lab + "/api/auth/logout", "_blank");
    const image = new Image();
    image.src = lab + "/api/auth/logout";
    return "requested (the test checks the session)";
  });
  // Let the images, popups and the form's request reach the lab before the test looks.
  await new Promise((resolve) => setTimeout(resolve, 1500));

  window.results = results;
  document.getElementById("results").textContent = JSON.stringify(notes, null, 1);
  document.body.dataset.done = "1";
})();
