if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("failed").textContent = "That token is not the right one.";
}
