import streamlit as st

st.title("Streamlit behind servicelab")
name = st.text_input("Your name", "world")
st.write(f"Hello, {name}!")
